"""Writing never destroys what the user did not ask to destroy.

Every test that aims ``overwrite`` or a delete at ``.``, ``""``, ``~`` or a parent of an
input runs inside the ``sandbox`` fixture (a fake home and working directory under the
test's temporary directory): a broken guard costs only that tree. The filesystem root is
only ever checked with the non-destructive ``protected_reason``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tree_snapshot

import millpond
from millpond.errors import OutputExistsError, UnsafePathError
from millpond.io import commit as commits
from millpond.io.safety import foreign_entry, protected_reason, remove_path

REPO = Path(__file__).resolve().parent.parent


def _rows(path: Path) -> list[dict]:
    return pq.read_table(str(path)).to_pylist()


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".millpond-" in p.name)


@pytest.fixture
def small(make_session):
    session = make_session("inline")
    return session, session.from_items([{"x": i} for i in range(10)])


# --------------------------------------------------------------------------- overwrite


@pytest.mark.parametrize("target", [".", "", "./", "~", "~/", "~/project", "..", "../.."])
def test_overwrite_of_home_cwd_or_their_parents_is_refused_and_deletes_nothing(
    sandbox: Path, small, target: str
) -> None:
    _session, df = small
    before = tree_snapshot(sandbox)
    with pytest.raises(UnsafePathError) as info:
        df.write_parquet(target, mode="overwrite")
    message = str(info.value)
    assert "refusing" in message
    assert any(word in message for word in ("home directory", "working directory"))
    assert tree_snapshot(sandbox) == before


@pytest.mark.parametrize("mode", ["error", "overwrite", "append", "ignore"])
def test_an_empty_working_directory_is_not_filled_by_any_mode(
    sandbox: Path, small, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """An empty folder is filled in place like a missing output, but never when it is the
    working directory (or home, root, their parents): files would land among the user's."""
    _session, df = small
    empty = sandbox / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(UnsafePathError, match="working directory"):
        df.write_parquet(".", mode=mode)
    assert list(empty.iterdir()) == []


def test_the_filesystem_root_is_protected_however_it_is_spelled() -> None:
    for root in ("/", "//", "///", "/.", "/tmp/.."):
        assert protected_reason(commits.destination(root)) == "it is the filesystem root"


def test_overwrite_of_a_folder_holding_an_input_is_refused(sandbox: Path, make_session) -> None:
    data = sandbox / "project" / "data" / "raw"
    data.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2, 3]}), data / "part-0.parquet")
    session = make_session("inline")
    df = session.read_parquet(str(data)).map("x * 2 AS x")
    before = tree_snapshot(sandbox)
    for target in (data, data.parent):
        with pytest.raises(UnsafePathError, match="an input of this job"):
            df.write_parquet(str(target), mode="overwrite")
    assert tree_snapshot(sandbox) == before


def test_overwrite_of_a_folder_that_is_not_a_dataset_names_the_first_foreign_file(
    sandbox: Path, small
) -> None:
    _session, df = small
    folder = sandbox / "project" / "results"
    folder.mkdir()
    pq.write_table(pa.table({"x": [1]}), folder / "part-0.parquet")
    (folder / "summary.txt").write_text("hand-written notes\n")
    before = tree_snapshot(sandbox)
    with pytest.raises(UnsafePathError) as info:
        df.write_parquet(str(folder), mode="overwrite")
    assert str(folder) in str(info.value)
    assert "summary.txt" in str(info.value)
    assert tree_snapshot(sandbox) == before


def test_overwrite_of_a_folder_of_code_is_refused(sandbox: Path, small) -> None:
    _session, df = small
    code = sandbox / "code"
    (code / ".git").mkdir(parents=True)
    (code / "setup.py").write_text("# setup\n")
    before = tree_snapshot(sandbox)
    with pytest.raises(UnsafePathError, match="not a dataset"):
        df.write_parquet(str(code), mode="overwrite")
    assert tree_snapshot(sandbox) == before


def test_overwrite_of_a_file_that_is_not_data_is_refused(sandbox: Path, small) -> None:
    _session, df = small
    with pytest.raises(UnsafePathError):
        df.write_parquet("~/.bashrc", mode="overwrite")
    assert (sandbox / ".bashrc").read_text() == "# my shell\n"


def test_overwrite_is_refused_before_any_work(sandbox: Path, make_session) -> None:
    session = make_session("workers")
    ran = sandbox / "ran"
    ran.mkdir()

    def touch(batch):
        (ran / f"{os.getpid()}-{time.time_ns()}").write_text("")
        return batch

    with pytest.raises(UnsafePathError):
        session.from_items([{"x": 1}]).map_batches(touch).write_parquet(".", mode="overwrite")
    assert list(ran.iterdir()) == []
    assert session.last_job.status == "pending"


def test_overwrite_replaces_a_previous_output_also_hive_partitioned_and_with_markers(
    sandbox: Path, make_session
) -> None:
    session = make_session("inline")
    out = sandbox / "project" / "out"
    session.from_items([{"g": i % 3, "x": i} for i in range(9)]).write_parquet(
        str(out), partition_by="g"
    )
    (out / "_SUCCESS").write_text("")
    (out / "g=0" / ".part-00000_0.parquet.crc").write_text("crc")
    session.from_items([{"g": 7, "x": 100}]).write_parquet(
        str(out), partition_by="g", mode="overwrite"
    )
    assert sorted(p.name for p in out.iterdir()) == ["g=7"]
    assert [r["x"] for r in _rows(out)] == [100]
    plain = sandbox / "project" / "plain"
    session.from_items([{"x": 1}]).write_parquet(str(plain))
    session.from_items([{"x": 2}]).write_parquet(str(plain), mode="overwrite")
    assert _rows(plain) == [{"x": 2}]
    assert _leftovers(out.parent) == []


# --------------------------------------------------------------------------- the guard


def test_remove_path_refuses_home_and_cwd_and_what_is_outside_its_scratch_space(
    sandbox: Path,
) -> None:
    scratch = sandbox / "scratch"
    (scratch / "job").mkdir(parents=True)
    before = tree_snapshot(sandbox)
    for path, within in ((sandbox, None), (sandbox / "project", None), (".", None)):
        with pytest.raises(UnsafePathError):
            remove_path(str(path), within=within)
    with pytest.raises(UnsafePathError, match="not inside"):
        remove_path(str(sandbox / "project" / "notes.txt"), within=str(scratch))
    with pytest.raises(UnsafePathError, match="not inside"):
        remove_path(str(scratch), within=str(scratch))
    with pytest.raises(UnsafePathError, match="not a dataset"):
        remove_path(str(sandbox / "project" / "src"))
    assert tree_snapshot(sandbox) == before
    remove_path(str(scratch / "job"), within=str(scratch))
    assert not (scratch / "job").exists()


def test_a_link_planted_in_the_scratch_space_is_removed_not_followed(sandbox: Path) -> None:
    scratch = sandbox / "scratch" / "job-0001"
    scratch.mkdir(parents=True)
    victim = sandbox / "project"
    before = tree_snapshot(victim)
    os.symlink(victim, scratch / "stage-0")
    remove_path(str(scratch / "stage-0"), within=str(scratch))
    assert not os.path.lexists(scratch / "stage-0")
    assert tree_snapshot(victim) == before


def test_job_clean_up_never_follows_a_planted_link(sandbox: Path, tmp_path: Path) -> None:
    root = tmp_path / "data-root"
    victim = sandbox / "project"
    before = tree_snapshot(victim)
    with millpond.init(job_id="planted", data_root=str(root), progress=False) as sp:
        job_dir = root / "planted" / "job-0001"
        job_dir.mkdir(parents=True)
        os.symlink(victim, job_dir / "stage-0")
        assert sp.from_items([{"x": 1}]).map("x + 1 AS y").take_all() == [{"y": 2}]
    assert tree_snapshot(victim) == before


def test_foreign_entry_accepts_datasets_and_names_anything_else(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "k=1").mkdir(parents=True)
    for name in ("part-0.parquet", "x.csv", "y.jsonl", "_SUCCESS", ".part-0.parquet.crc"):
        (data / name).write_text("")
    (data / "k=1" / "part-1.parquet").write_text("")
    assert foreign_entry(str(data)) is None
    (data / "k=1" / "README.md").write_text("")
    assert foreign_entry(str(data)) == str(data / "k=1" / "README.md")


def test_files_millpond_copied_into_an_output_count_as_its_data_and_nothing_else(
    sandbox: Path, small
) -> None:
    """A smallpond PythonScriptNode's files (``.dat``) copied into an output folder are
    listed in its ``.millpond-files.txt``: an overwrite may replace those, never a file the
    list does not name, a name outside the folder, or anything a list of another user's
    names."""
    _session, df = small
    folder = sandbox / "project" / "sorted"
    folder.mkdir()
    (folder / "part-0.dat").write_bytes(b"records")
    (folder / ".millpond-files.txt").write_text("part-0.dat\n../notes.txt\n")
    assert foreign_entry(str(folder)) is None
    df.write_parquet(str(folder), mode="overwrite")
    assert [p.name for p in folder.iterdir()] == ["part-00000.parquet"]
    assert (sandbox / "project" / "notes.txt").read_text() == "my notes\n"

    folder.mkdir(exist_ok=True)
    (folder / "part-0.dat").write_bytes(b"records")
    (folder / "main.py").write_text("print('mine')\n")
    (folder / ".millpond-files.txt").write_text("part-0.dat\n")
    before = tree_snapshot(sandbox)
    with pytest.raises(UnsafePathError, match="main.py"):
        df.write_parquet(str(folder), mode="overwrite")
    assert tree_snapshot(sandbox) == before

    (folder / "main.py").unlink()
    os.chown(folder / ".millpond-files.txt", 65534, 65534)  # planted by another user
    assert foreign_entry(str(folder)) == str(folder / "part-0.dat")
    before = tree_snapshot(sandbox)
    with pytest.raises(UnsafePathError, match="part-0.dat"):
        df.write_parquet(str(folder), mode="overwrite")
    assert tree_snapshot(sandbox) == before


# --------------------------------------------------------------------------- append


def test_three_appends_under_one_job_id_keep_all_three_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    root = tmp_path / "root"
    for run in range(3):
        with millpond.init(job_id="nightly", data_root=str(root), progress=False) as sp:
            rows = [{"run": run, "i": i} for i in range(4)]
            sp.from_items(rows, npartitions=2).write_parquet(str(out), mode="append")
    rows = _rows(out)
    assert len(rows) == 12
    assert sorted({r["run"] for r in rows}) == [0, 1, 2]
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == len(set(names)) == 6


def test_an_append_never_replaces_an_existing_file(tmp_path: Path) -> None:
    staging, target = tmp_path / ".out.millpond-staging-x", tmp_path / "out"
    staging.mkdir()
    target.mkdir()
    (staging / "part-a.parquet").write_text("new")
    (target / "part-a.parquet").write_text("old")
    with pytest.raises(OutputExistsError, match="nothing was replaced"):
        commits.commit(str(staging), str(target), "append")
    assert (target / "part-a.parquet").read_text() == "old"


# --------------------------------------------------------------------------- writers


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _plant_staging(parent: Path, name: str, record: dict | None) -> Path:
    staging = parent / name
    staging.mkdir()
    pq.write_table(pa.table({"x": [1]}), staging / "part-00000.parquet")
    if record is not None:
        (staging / commits.WRITER_FILE).write_text(json.dumps(record))
    return staging


def test_the_next_write_removes_staging_of_dead_writers_and_keeps_live_ones(
    tmp_path: Path, make_session
) -> None:
    out = tmp_path / "out"
    host = os.uname().nodename
    dead = _plant_staging(
        tmp_path, ".out.millpond-staging-dead", {"pid": _dead_pid(), "host": host}
    )
    trash = _plant_staging(tmp_path, ".out.millpond-old-dead", {"pid": _dead_pid(), "host": host})
    alive = _plant_staging(
        tmp_path, ".out.millpond-staging-alive", {"pid": os.getpid(), "host": host}
    )
    elsewhere = _plant_staging(
        tmp_path, ".out.millpond-staging-remote", {"pid": 1, "host": "another-machine"}
    )
    other_output = _plant_staging(
        tmp_path, ".other.millpond-staging-dead", {"pid": _dead_pid(), "host": host}
    )
    make_session("inline").from_items([{"x": 1}]).write_parquet(str(out))
    assert not dead.exists() and not trash.exists()
    assert alive.exists() and elsewhere.exists() and other_output.exists()
    assert _rows(out) == [{"x": 1}]


WRITER = textwrap.dedent(
    """
    import os, sys, time
    import millpond

    root, mode, go, writer, *outs = sys.argv[1:]
    sp = millpond.init(data_root=root, progress=False, num_executors=1)
    df = sp.from_items([{"writer": int(writer), "i": i} for i in range(200)], npartitions=4)
    while not os.path.exists(go):
        time.sleep(0.005)
    for out in outs:
        try:
            df.write_parquet(out, mode=mode)
            print("ok")
        except millpond.OutputExistsError as exc:
            print("exists:", exc)
    sp.shutdown()
    """
)


@pytest.mark.parametrize("mode", ["overwrite", "error"])
def test_concurrent_writers_of_one_path_never_collide(tmp_path: Path, mode: str) -> None:
    """Four processes write the same five paths at once, one path after the other."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    outs, go = [tmp_path / f"out{n}" for n in range(5)], tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    writers = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"r{n}"), mode, str(go), str(n)]
            + [str(out) for out in outs],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(4)
    ]
    time.sleep(2.0)  # every writer has imported millpond and waits
    go.write_text("")
    results = [w.communicate(timeout=120) for w in writers]
    for writer, (_stdout, stderr) in zip(writers, results):
        assert writer.returncode == 0, stderr
    lines = [stdout.splitlines() for stdout, _ in results]
    for index, out in enumerate(outs):
        outcomes = [writer_lines[index] for writer_lines in lines]
        if mode == "overwrite":
            assert outcomes == ["ok"] * 4
        else:
            assert sorted(line == "ok" for line in outcomes) == [False, False, False, True]
            for line in outcomes:
                if line != "ok":  # found at the start, or at the commit: both say so truly
                    assert "already exists" in line or (
                        "another writer" in line and "discarded" in line
                    ), line
                    assert "left in" not in line
        rows = _rows(out)
        assert len(rows) == 200 and len({r["writer"] for r in rows}) == 1
    assert _leftovers(tmp_path) == []


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import millpond

    out, root = sys.argv[1:3]
    sp = millpond.init(data_root=root, progress=False, num_executors=2)

    def slow(batch):
        time.sleep(0.5)
        return batch

    sp.from_items([{"x": i} for i in range(40)], npartitions=40).map_batches(slow).write_parquet(out)
    """
)


def _start_writer(tmp_path: Path, source: str, out: Path) -> subprocess.Popen:
    script = tmp_path / "job.py"
    script.write_text(source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILLPOND_")}
    return subprocess.Popen(
        [sys.executable, str(script), str(out), str(tmp_path / "root")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # Ctrl-C as a terminal delivers it, even when the tests run as a background job
        # (whose shell made them ignore SIGINT, which a child inherits)
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_staging(
    parent: Path, process: subprocess.Popen, inside: str = "_task-*/part-*.parquet"
) -> None:
    """Until the job's staging directory holds a file matching ``inside`` ("": exists)."""
    pattern = ".out.millpond-staging-*" + (f"/{inside}" if inside else "")
    deadline = time.monotonic() + 60
    while not any(parent.glob(pattern)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"the job never staged {pattern}"
        time.sleep(0.02)


def test_staging_of_a_killed_writer_is_removed_by_the_next_write(
    tmp_path: Path, make_session
) -> None:
    out = tmp_path / "out"
    writer = _start_writer(tmp_path, KILLED_WRITER, out)
    try:
        _wait_for_staging(tmp_path, writer)
        writer.kill()
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert _leftovers(tmp_path) != []  # SIGKILL leaves it behind
    make_session("inline").from_items([{"x": 1}]).write_parquet(str(out))
    assert _leftovers(tmp_path) == []
    assert _rows(out) == [{"x": 1}]


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_sigterm_or_ctrl_c_ends_a_job_cleanly(tmp_path: Path, signal_name: str) -> None:
    import signal

    psutil = pytest.importorskip("psutil")
    out = tmp_path / "out"
    writer = _start_writer(tmp_path, KILLED_WRITER, out)
    try:
        _wait_for_staging(tmp_path, writer)
        children = psutil.Process(writer.pid).children(recursive=True)
        assert children, "the job runs its Python step on workers"
        writer.send_signal(getattr(signal, signal_name))
        stdout, stderr = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode != 0
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("millpond: interrupted"), stderr
    assert _leftovers(tmp_path) == []
    assert not out.exists()
    failed = list((tmp_path / "root").glob("*/job-0001/FAILED.txt"))
    assert len(failed) == 1 and "interrupted" in failed[0].read_text()
    psutil.wait_procs(children, timeout=10)
    assert [c.pid for c in children if c.is_running() and c.status() != "zombie"] == []


ENDLESS_SQL = textwrap.dedent(
    """
    import sys
    import millpond

    out, root = sys.argv[1:3]
    sp = millpond.init(data_root=root, progress=False)
    print("ready", flush=True)
    endless = sp.partial_sql("SELECT sum(hash(i)) AS h FROM range(1000000000000) t(i)")
    endless.write_parquet(out)
    """
)


def test_sigterm_stops_a_long_query_running_in_the_driver(tmp_path: Path) -> None:
    import signal

    out = tmp_path / "out"
    job = _start_writer(tmp_path, ENDLESS_SQL, out)
    try:
        assert job.stdout.readline().strip() == "ready"
        _wait_for_staging(tmp_path, job, inside="")
        time.sleep(0.5)  # the query runs
        job.send_signal(signal.SIGTERM)
        _stdout, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert stderr.startswith("millpond: interrupted by SIGTERM") and "Traceback" not in stderr
    assert _leftovers(tmp_path) == [] and not out.exists()
