"""What one task of a stage may use: DuckDB threads, a memory budget, executor slots and
GPUs, from the node's limits and the session's, fitted to the engine (with a warning),
and how long it may run."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from millpond.config import SessionConfig, describe_size
from millpond.errors import PlanError
from millpond.execution.engine import Engine
from millpond.execution.failures import describe_node
from millpond.execution.plan import PhysicalPlan, Stage

log = logging.getLogger("millpond.job")

_warned_no_gpu = False  # one warning per process of a gpu_limit on a machine without GPUs


def _first_no_gpu_warning() -> bool:
    """Whether a job of this process finds no GPU for a ``gpu_limit`` for the first time."""
    global _warned_no_gpu
    first = not _warned_no_gpu
    _warned_no_gpu = True
    return first


def check_gpu_requests(plan: PhysicalPlan, engine: Engine) -> None:
    """Refuse, before anything runs, a step whose ``num_gpus`` per task is more than one
    task of ``engine`` can hold: such a task could never start (Ray would queue it for
    ever), and running it on CPU instead would hide that the model is not on a GPU.
    smallpond's ``gpu_limit`` keeps its warning and CPU fallback (see :meth:`_gpu`)."""
    most = engine.gpus_per_task
    for stage in plan.stages:
        for op in stage.ops:
            need = getattr(op, "num_gpus", None)
            if need and need > most + 1e-6:
                fix = (
                    f"ask for at most num_gpus={most:g}"
                    if most
                    else "leave num_gpus out to run the step on CPU"
                )
                raise PlanError(
                    f"{op.step.label} asks for num_gpus={need:g} per task, but "
                    f"{_gpus_found(engine, most)}: {fix}.\n  {op.step.describe()}"
                )


def _gpus_found(engine: Engine, most: float) -> str:
    """What the engine has, in words, for the error of a step asking for more."""
    if engine.name == "ray":
        return (
            f"the largest node of the Ray cluster has {most:g} GPU(s) ({len(engine.gpus)} in "
            "the cluster; nodes declare theirs with ray start --num-gpus)"
        )
    return (
        f"the embedded engine has {most:g} GPU(s) (found through CUDA_VISIBLE_DEVICES, "
        "nvidia-smi or an imported torch, or declared with init(num_gpus=N))"
    )


@dataclass(frozen=True)
class TaskBudget:
    """The resources of one task."""

    threads: int  # DuckDB threads
    memory: int  # memory limit in bytes
    executor_slots: int  # executor slots it occupies in the pool
    gpus: float


class TaskResources:
    """Sizes the tasks of one job. A ``gpu_limit`` on a machine without GPUs is warned of
    once per process (every job of a session would say the same); other fitted limits
    once per stage."""

    def __init__(self, config: SessionConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self._warned: set[tuple[int, str]] = set()

    def budget(self, stage: Stage, inline: bool, memory_limit: int | None = None) -> TaskBudget:
        """One task's resources; ``memory_limit`` overrides its memory budget (a retry)."""
        if inline:  # one task at a time in the driver: the whole machine
            return TaskBudget(self.config.num_executors, self.config.memory_limit, 1, 0.0)
        threads = self._cpu(stage)
        memory = memory_limit or self._memory(stage, threads)
        executor_slots = max(threads, math.ceil(memory / self._share()))
        gpus = self._gpu(stage)
        return TaskBudget(
            threads, memory, min(executor_slots, max(1, self.engine.parallelism)), gpus
        )

    def timeout(self, stage: Stage) -> tuple[float | None, str]:
        """How long a task of ``stage`` may run: the smallest of the session's
        ``task_timeout`` and the ``timeout=`` of its steps, and who set it."""
        timeout = self.config.task_timeout
        origin = f"task_timeout={timeout:g}" if timeout else ""
        for op in stage.ops:
            own = getattr(op, "timeout", None)
            if own and (timeout is None or own < timeout):
                timeout, origin = float(own), f"timeout={own:g} of {op.step.describe()}"
        return timeout, origin

    def _warn_once(self, stage: Stage, what: str, message: str) -> None:
        key = (stage.id, what)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def _share(self) -> int:
        """The memory budget of one executor slot: the session's limit split evenly."""
        return max(1, self.config.memory_limit // max(1, self.engine.parallelism))

    def _cpu(self, stage: Stage) -> int:
        """DuckDB threads of one task, which is also how many executor slots it occupies."""
        cpu = max(1, int(stage.cpu_limit or 1))
        slots = max(1, self.engine.parallelism)
        if cpu > slots:
            self._warn_once(
                stage,
                "cpu",
                f"{describe_node(stage)} asks for cpu_limit={cpu} but this engine has {slots} "
                f"executor slot(s); running its tasks with {slots}",
            )
            cpu = slots
        return cpu

    def _gpu(self, stage: Stage) -> float:
        """GPUs one task occupies: none on a machine without GPUs (warned once)."""
        need = float(stage.gpu_limit or 0.0)
        if need <= 0:
            return 0.0
        gpus = self.engine.gpus
        if not gpus:
            if _first_no_gpu_warning():
                log.warning(
                    "%s asks for gpu_limit=%s but no GPU was found (CUDA_VISIBLE_DEVICES, "
                    "nvidia-smi); running on CPU",
                    describe_node(stage),
                    stage.gpu_limit,
                )
            return 0.0
        if need > len(gpus):
            self._warn_once(
                stage,
                "gpu",
                f"{describe_node(stage)} asks for gpu_limit={stage.gpu_limit} but {len(gpus)} "
                f"GPU(s) were found; giving each task {len(gpus)}",
            )
            need = float(len(gpus))
        return need

    def _memory(self, stage: Stage, cpu: int) -> int:
        """One task's memory budget: the stage's, else the share of the slots it occupies."""
        if stage.memory_limit:
            limit = int(stage.memory_limit)
            if limit > self.config.memory_limit:
                self._warn_once(
                    stage,
                    "memory",
                    f"{describe_node(stage)} asks for memory_limit={describe_size(limit)} per "
                    f"task, more than the session's {describe_size(self.config.memory_limit)}; "
                    "using that",
                )
                limit = self.config.memory_limit
            return limit
        return self._share() * cpu
