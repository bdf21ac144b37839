"""Running contenders in subprocesses and measuring their peak memory.

Peak memory is measured by sampling: a background thread in the parent sums
the RSS of the child process and all its descendants (``psutil``) every ~20 ms
and keeps the maximum; the tree itself is listed again (``children(recursive=True)``,
which scans every process of the machine) only every ~0.25 s, because listing it
each time cost the sampler ~15 % of a core: on a 2-core machine that is taken from
a contender that keeps both cores busy and not from one that uses one. This counts
engine worker processes, which ``ru_maxrss`` of ``RUSAGE_CHILDREN`` would not
(that reports the largest single process, not the sum). Pages shared between
processes (e.g. shared libraries) are counted once per process, so the sum
slightly overstates the memory of multi-process contenders; spikes shorter than
the sampling interval can be missed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.child import RESULT_PREFIX

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_S = 0.02
TREE_REFRESH_S = 0.25  # how often the process tree is listed again (new workers)


def tree_rss(proc: psutil.Process) -> int:
    """The RSS of ``proc`` and all its descendants now (a process that ended counts 0)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, not idle/iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _rss_and_cpu(proc: psutil.Process) -> tuple[int, float] | None:
    """(resident bytes, CPU seconds) of one process; None once it has gone. On Linux one
    read of ``/proc/<pid>/stat`` (a tenth of what psutil's two reads cost)."""
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # after the ")" closing the command name: state is field 3, utime 14, stime 15, rss 24
        return int(fields[21]) * _PAGE, (int(fields[11]) + int(fields[12])) / _TICK
    except FileNotFoundError:
        return None
    except OSError:  # not Linux: ask psutil
        try:
            with proc.oneshot():
                cpu = proc.cpu_times()
                return proc.memory_info().rss, cpu.user + cpu.system
        except psutil.Error:
            return None


class TreeRssSampler(threading.Thread):
    """Samples the summed RSS and the CPU time of a process tree until stopped.

    CPU time per process is the last value seen, so up to one interval of CPU
    per process (and processes living less than one interval) can be missed.
    """

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.max_procs = 0
        self._cpu: dict[int, float] = {}
        self._procs: list[psutil.Process] = []
        self._listed = 0.0  # when the tree was last listed (monotonic seconds)
        self._stop_event = threading.Event()

    @property
    def cpu_s(self) -> float:
        """CPU seconds (user + system) used by the tree, as far as sampled."""
        return sum(self._cpu.values())

    def sample(self) -> None:
        """Take one sample and update the peak (listing the tree again when it is due)."""
        now = time.monotonic()
        if not self._procs or now - self._listed >= TREE_REFRESH_S:
            try:
                root = psutil.Process(self.pid)
                self._procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            self._listed = now
        total, alive = 0, 0
        for proc in self._procs:
            usage = _rss_and_cpu(proc)
            if usage is None:
                continue
            total += usage[0]
            self._cpu[proc.pid] = usage[1]
            alive += 1
        self.peak = max(self.peak, total)
        self.max_procs = max(self.max_procs, alive)

    def run(self) -> None:
        """Sample until :meth:`stop` is called."""
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop_event.set()
        self.join()


@dataclass
class ProcResult:
    """Outcome of one subprocess run."""

    returncode: int
    wall_s: float
    peak_rss: int
    max_procs: int
    cpu_s: float  # CPU seconds used by the process tree (sampled)
    background: float  # mean share of the machine's CPU used by *other* processes, 0..1
    stdout: str
    stderr: str
    timed_out: bool = False
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """A one-line error description, or None if the run succeeded."""
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f}s"
        if "error" in self.result:
            return str(self.result["error"])
        if self.returncode != 0:
            tail = (self.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            return f"exit status {self.returncode}: {tail}"
        return None


def child_env() -> dict[str, str]:
    """Environment for subprocesses: the repo root on PYTHONPATH, bytecode caching on.

    The repo root makes ``bench`` (and so the pickled UDF) and ``millpond`` importable
    in the child and in any worker processes it starts, whatever their cwd. A shell that
    sets ``PYTHONDONTWRITEBYTECODE`` would make every fresh process compile each module
    from source (DuckDB's Python layer and millpond: ~0.25 s of a cold start here), which
    an installed package on a user's machine never does; the children may write and read
    their ``__pycache__`` like any program.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    parts = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def run_process(argv: list[str], timeout: float) -> ProcResult:
    """Run ``argv`` in its own session, timing it and sampling its tree RSS.

    On timeout the whole process group is killed (it is ours: started with
    ``start_new_session=True``).
    """
    me = psutil.Process()
    busy0, own0 = machine_busy_s(), sum(me.cpu_times()[:2])
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sampler = TreeRssSampler(proc.pid)
    sampler.start()
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    # our own CPU (this process: sampling, pipes) is not background load either
    busy = machine_busy_s() - busy0 - (sum(me.cpu_times()[:2]) - own0)
    ncpu = psutil.cpu_count() or 1
    background = max(0.0, min(1.0, (busy - sampler.cpu_s) / (wall * ncpu)))
    result: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
    return ProcResult(
        returncode=proc.returncode,
        wall_s=wall,
        peak_rss=sampler.peak,
        max_procs=sampler.max_procs,
        cpu_s=sampler.cpu_s,
        background=background,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        result=result,
    )


def wait_for_quiet(max_wait_s: float, threshold: float = 0.25, window_s: float = 0.5) -> float:
    """Wait (at most ``max_wait_s``) until the machine is less than ``threshold`` busy.

    Returns the busy share of the last window, so callers can log a noisy start.
    """
    ncpu = psutil.cpu_count() or 1
    deadline = time.monotonic() + max_wait_s
    while True:
        b0 = machine_busy_s()
        time.sleep(window_s)
        share = (machine_busy_s() - b0) / (window_s * ncpu)
        if share < threshold or time.monotonic() >= deadline:
            return share


def run_task(task: str, params: dict[str, Any], timeout: float) -> ProcResult:
    """Run one task of :mod:`bench.workloads` in a fresh ``python -m bench.child``."""
    return run_process([sys.executable, "-m", "bench.child", task, json.dumps(params)], timeout)


def run_code(code: str, timeout: float) -> ProcResult:
    """Run ``python -c code``; its wall time is the measurement."""
    return run_process([sys.executable, "-c", code], timeout)
