"""The Ray engine's bookkeeping of a cluster's capacity: the pool of actors a stage's
callable class runs in, the tasks in flight, and what both hold while the engine decides
which queued task starts next (see :class:`~millpond.execution.ray_engine.RayEngine`)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from millpond.execution.engine import Demand
from millpond.execution.task_run import TaskSpec

if TYPE_CHECKING:
    from millpond.execution.ray_engine import RayEngine

log = logging.getLogger("millpond.ray")


def pool_op(spec: TaskSpec):
    """The ``map_batches`` step of a task that runs in an actor pool, if any."""
    for op in spec.ops:
        if getattr(op, "actor_pool", False):
            return op
    return None


class ActorPool:
    """The actors of one stage, started as its tasks need them (up to ``high``, and only
    while the cluster has room: see :meth:`RayEngine._room_for_actor`); an actor that dies
    is dropped, and a new one takes its place when a task needs one."""

    def __init__(self, engine: RayEngine, bounds: tuple[int, int], need: Demand) -> None:
        self.engine = engine
        low, high = bounds
        # no more actors than the cluster can hold at once: an actor Ray cannot place would
        # keep the tasks given to it waiting for ever
        fits = engine._cpus // max(1, need.slots)
        if need.gpus > 0:
            fits = min(fits, int(len(engine._gpus) / need.gpus + 1e-6))
        if high > max(1, fits):
            log.warning(
                "concurrency=%d asks for more actors than the cluster holds (%d CPUs, %d GPUs); "
                "the pool has %d",
                high,
                engine._cpus,
                len(engine._gpus),
                max(1, fits),
            )
            high = max(1, fits)
        self.low, self.high = min(low, high), high
        self.cpus, self.gpus = max(1, need.slots), need.gpus
        options = engine._resources(need)
        options["max_restarts"] = 0
        self._factory = engine._actor.options(**options)
        self.actors: list[object] = []
        self.idle: list[object] = []

    @property
    def can_grow(self) -> bool:
        return len(self.actors) < self.high

    def grow(self) -> object:
        """A new actor, handed out at once."""
        actor = self._factory.remote()
        self.actors.append(actor)
        return actor

    def take(self) -> object | None:
        """An idle actor, or None."""
        return self.idle.pop() if self.idle else None

    def give_back(self, actor: object) -> None:
        self.idle.append(actor)

    def drop(self, actor: object) -> None:
        if actor in self.actors:
            self.actors.remove(actor)
        if actor in self.idle:
            self.idle.remove(actor)
        with contextlib.suppress(Exception):
            self.engine.ray.kill(actor)

    def drop_idle(self) -> None:
        for actor in list(self.idle):
            self.drop(actor)

    def close(self) -> None:
        for actor in list(self.actors):
            self.drop(actor)


@dataclass
class Flight:
    """A task handed to Ray: what it runs, since when, in which actor, holding what."""

    spec: TaskSpec
    submitted: float
    need: Demand
    actor: object | None = None
    data: object | None = None  # the output's reference, when it stays in the object store


@dataclass
class Usage:
    """What the cluster holds while one scheduling pass runs: CPUs and GPUs of every actor
    (busy or idle) and of the tasks in flight, the actors' CPUs alone, and the stages that
    have work (queued or in flight). Counted once per pass and kept up to date as tasks
    start, not recounted for each queued task."""

    cpus: float
    gpus: float
    actor_cpus: float
    working: set[int]

    @classmethod
    def of(cls, pending: dict[object, Flight], pools: dict[int, ActorPool], queue) -> Usage:
        actor_cpus = sum(p.cpus * len(p.actors) for p in pools.values())
        actor_gpus = sum(p.gpus * len(p.actors) for p in pools.values())
        tasks = [f.need for f in pending.values() if f.actor is None]
        working = {s.stage_id for s in queue} | {f.spec.stage_id for f in pending.values()}
        return cls(
            actor_cpus + sum(max(1, n.slots) for n in tasks),
            actor_gpus + sum(n.gpus for n in tasks),
            actor_cpus,
            working,
        )

    def grow(self, pool: ActorPool) -> object:
        """A new actor of ``pool``, counted."""
        self.cpus += pool.cpus
        self.gpus += pool.gpus
        self.actor_cpus += pool.cpus
        return pool.grow()
