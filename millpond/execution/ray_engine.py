"""The Ray engine: tasks run as Ray tasks on a cluster millpond attaches to (``ray_address``,
``MILLPOND_RAY_ADDRESS``, ``ray://`` client addresses) or on a local Ray it starts (bound to
127.0.0.1, no dashboard). Stages small enough to run inline run in the driver, as on the
embedded engine; data between stages goes through files under ``data_root``, which every
node must therefore see, except a pipelined stage's input: it stays in Ray's object store.
Callable classes with ``concurrency`` run in a pool of actors per stage; tasks start while
the cluster has room for them, counting what the actors hold."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator

import cloudpickle
import duckdb

from millpond.config import describe_size
from millpond.execution.engine import Demand, Engine, Failure, Outcome, take_first_fit
from millpond.execution.local_engine import LocalEngine
from millpond.execution.ray_pools import ActorPool, Flight, Usage, pool_op
from millpond.execution.task_run import TaskSpec
from millpond.execution.worker import execute, run_payload
from millpond.io.filesystem import is_local
from millpond.io.safety import remove_path
from millpond.operators.data import DataInput, ObjectPartition, TablePartition

log = logging.getLogger("millpond.ray")

# the connection of this process to Ray is global: engines share it, and the last one to
# shut down disconnects (stopping Ray too when an engine of ours started it)
_lock = threading.Lock()
_users = 0
_started_here = False
_connected_here = False

# one DuckDB database per Ray worker process, reused by the tasks it runs
_con: duckdb.DuckDBPyConnection | None = None


def _connection() -> duckdb.DuckDBPyConnection:
    global _con
    if _con is None:
        _con = duckdb.connect()
    return _con


def _run_on_ray(payload: bytes, *objects) -> tuple[int, float, float, bytes]:
    """The body of every Ray task: a pickled TaskSpec in (and the Arrow tables of its
    object-store inputs, which Ray resolves), a pickled outcome out."""
    started = time.time()
    result = execute(payload, _connection(), objects)
    return os.getpid(), started, time.time(), result


def _run_keeping_output(payload: bytes, *objects) -> tuple[tuple, object]:
    """Like :func:`_run_on_ray` for a task whose output stays in Ray's object store: two
    returns, the outcome (small, for the driver) and the output table (for the next task,
    which Ray hands it without the driver touching it)."""
    started = time.time()
    status, value = run_payload(payload, _connection(), objects)
    table = None
    if status == "ok" and isinstance(value.output.partition, TablePartition):
        table = value.output.partition.table
        value.output.partition = ObjectPartition(None, table.num_rows, table.nbytes)
    outcome = (os.getpid(), started, time.time(), cloudpickle.dumps((status, value)))
    return outcome, table


class _PoolActor:
    """An actor of a stage's pool: runs task after task of that stage in one process, so
    the callable class of its ``map_batches`` is constructed once per actor."""

    def run(self, payload: bytes, *objects) -> tuple[int, float, float, bytes]:
        return _run_on_ray(payload, *objects)

    def pid(self) -> int:
        return os.getpid()


def _ship(spec: TaskSpec) -> tuple[TaskSpec, list[object]]:
    """``spec`` as it travels: its object-store pieces become argument numbers, and the
    references go beside it as arguments of the Ray call (Ray moves the data)."""
    refs: list[object] = []
    slots = []
    for slot in spec.slots:
        if isinstance(slot, DataInput) and any(isinstance(p, ObjectPartition) for p in slot.pieces):
            pieces = []
            for piece in slot.pieces:
                if isinstance(piece, ObjectPartition):
                    if piece.ref is None:
                        raise RuntimeError(f"{spec.name}: its input left the object store")
                    pieces.append(ObjectPartition(None, piece.rows, piece.nbytes, len(refs)))
                    refs.append(piece.ref)
                else:
                    pieces.append(piece)
            slot = dataclasses.replace(slot, pieces=pieces)
        slots.append(slot)
    if not refs:
        return spec, refs
    return dataclasses.replace(spec, slots=slots), refs


def _sees_file(path: str) -> bool:
    return os.path.exists(path)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray replaces a node address of 127.0.0.1 by the machine's reachable address (so
    other nodes could join) unless it believes clusters are off, as on macOS and Windows:
    while a local instance starts, say so, and every Ray process binds to 127.0.0.1."""
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - a Ray without that module
        yield
        return
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "the Ray engine needs Ray: pip install 'millpond[ray]' (or pip install ray)"
        ) from exc
    return ray


CLIENT_ATTEMPTS = 3  # Ray Client connections tried before giving up


def _attach(ray, address: str):
    """``ray.init(address)``. A Ray Client address (``ray://``) is tried again after a
    short wait when the head could not start this client's server in time (it says
    "Starting Ray client server failed" on a busy head): a passing failure, not an error
    of the address."""
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            return ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as exc:  # ConnectionAbortedError: the server did not start
            if not address.startswith("ray://") or attempt == CLIENT_ATTEMPTS:
                raise
            log.warning("attaching to %s failed (%s); trying again", address, exc)
            with contextlib.suppress(Exception):
                ray.shutdown()
            time.sleep(2.0 * attempt)
    raise AssertionError("unreachable")


class RayEngine(Engine):
    """Runs tasks on Ray. ``address``: an existing cluster (``host:port`` or
    ``ray://host:port``); None starts a local Ray with ``num_executors`` CPUs."""

    name = "ray"
    keeps_outputs = True  # in-memory outputs stay in Ray's object store
    runs_gpu_stages_inline = False  # Ray places them on nodes with GPUs
    runs_sql_stages_inline = False  # large SQL stages spread over the cluster's nodes

    def __init__(
        self,
        num_executors: int,
        address: str | None = None,
        data_root: str | None = None,
        num_gpus: int | None = None,
    ) -> None:
        self.ray = _import_ray()
        self.address = address
        self.num_executors = num_executors
        self.num_gpus = num_gpus  # for the local Ray started here (a cluster counts its own)
        self._inline = LocalEngine(num_executors)
        self._closed = False
        self._connect()
        try:
            resources = self.ray.cluster_resources()
            self._cpus = max(1, int(resources.get("CPU", num_executors)))
            self._gpus = [str(i) for i in range(int(resources.get("GPU", 0)))]
            self._nodes = [n for n in self.ray.nodes() if n.get("Alive")]
            # the most of each resource one task can hold: the largest node's (0: unknown)
            self._node_most = {
                name: max((n.get("Resources", {}).get(name, 0) for n in self._nodes), default=0)
                for name in ("CPU", "GPU", "memory")
            }
            self._warned: set[str] = set()
            if data_root is not None:
                self._check_data_root(data_root)
        except BaseException:
            self.shutdown()
            raise
        self._remote = self.ray.remote(_run_on_ray)
        self._keeping = self.ray.remote(_run_keeping_output)
        self._actor = self.ray.remote(_PoolActor)

    # -- connection ------------------------------------------------------------
    def _connect(self) -> None:
        global _users, _started_here, _connected_here
        ray = self.ray
        with _lock:
            if not ray.is_initialized():
                if self.address:
                    log.info("attaching to the Ray cluster at %s", self.address)
                    if self.num_gpus is not None:
                        log.warning(
                            "init(num_gpus=%d) is ignored on an existing Ray cluster: Ray "
                            "counts the GPUs its nodes declare (ray start --num-gpus)",
                            self.num_gpus,
                        )
                    context = _attach(ray, self.address)
                    _started_here = False
                    self.dashboard_url = _dashboard_url(context)
                else:
                    log.info("starting a local Ray instance with %d CPUs", self.num_executors)
                    with _loopback_only():
                        ray.init(
                            address="local",
                            num_cpus=self.num_executors,
                            num_gpus=self.num_gpus,
                            include_dashboard=False,
                            _node_ip_address="127.0.0.1",
                            logging_level=logging.WARNING,
                        )
                    _started_here = True
                _connected_here = True
            _users += 1

    @property
    def started_ray(self) -> bool:
        """Whether millpond started the Ray instance it runs on (and will stop it)."""
        return _started_here

    def _check_data_root(self, data_root: str) -> None:
        """Every node must see ``data_root`` (shuffles and stage outputs go there): on a
        cluster of several nodes, a task on each node looks for a file the driver wrote."""
        if len(self._nodes) <= 1 or not is_local(data_root):
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        os.makedirs(data_root, exist_ok=True)
        probe = os.path.join(data_root, f".millpond-probe-{uuid.uuid4().hex}")
        with open(probe, "w") as f:
            f.write("millpond\n")
        try:
            check = self.ray.remote(_sees_file)
            # by node id: several nodes may share an address (e.g. on one machine)
            refs = [
                (
                    f"{n['NodeManagerAddress']} (node {n['NodeID'][:12]})",
                    check.options(
                        num_cpus=0,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                    ).remote(probe),
                )
                for n in self._nodes
            ]
            blind = [node for node, ref in refs if not self.ray.get(ref, timeout=120)]
        finally:
            remove_path(probe, within=data_root)
        if blind:
            raise RuntimeError(
                f"data_root {data_root!r} is a local path that the Ray nodes {blind} cannot see; "
                f"on a cluster of {len(self._nodes)} nodes it must be on a shared mount that "
                "every node sees at the same path (set data_root= or MILLPOND_DATA_ROOT)"
            )

    # -- the Engine interface --------------------------------------------------
    @property
    def parallelism(self) -> int:
        return self._cpus

    @property
    def gpus(self) -> list[str]:
        return self._gpus

    @property
    def gpus_per_task(self) -> float:
        """One task (or actor) holds at most the GPUs of the node with the most."""
        return float(self._node_most["GPU"])

    @property
    def nodes(self) -> int:
        return len(self._nodes)

    def run(
        self,
        queue: deque[TaskSpec],
        inline: bool,
        demand: Callable[[TaskSpec], Demand] | None = None,
    ) -> Iterator[Outcome]:
        """Tasks start on Ray while the cluster has room for them (counting what the
        stages' actors hold), the first in queue order that fits: stages run side by side
        (pipelined) without one taking every CPU the other needs."""
        if inline:
            yield from self._inline.run(queue, inline=True)
            return
        ray = self.ray
        pending: dict[object, Flight] = {}
        pools: dict[int, ActorPool] = {}
        try:
            while queue or pending:
                self._start_tasks(queue, pending, pools, demand)
                if not pending:
                    break  # unreachable: with nothing in flight the first task always starts
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=_time_left(pending))
                if not ready:
                    yield from self._stop_late(pending, pools)
                for ref in ready:
                    flight = pending.pop(ref)
                    outcome = self._outcome(ref, flight.spec, flight.submitted, flight.data)
                    if flight.actor is not None:
                        pool = pools[flight.spec.stage_id]
                        if outcome.failure is not None and outcome.pid is None:
                            pool.drop(flight.actor)  # the actor died: a new one replaces it
                        else:
                            pool.give_back(flight.actor)
                    yield outcome
        finally:
            for ref in pending:  # an early stop (a limit reached, a failure)
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort
                    log.debug("could not cancel a Ray task", exc_info=True)
            for pool in pools.values():
                pool.close()

    def _stop_late(
        self, pending: dict[object, Flight], pools: dict[int, ActorPool]
    ) -> Iterator[Outcome]:
        """Stop the tasks past their timeout (a plain task is cancelled, an actor killed:
        its pool replaces it) and yield their failures."""
        now = time.time()
        for ref, flight in list(pending.items()):
            timeout = flight.spec.timeout
            if not timeout or now < flight.submitted + timeout:
                continue
            del pending[ref]
            if flight.actor is not None:
                pools[flight.spec.stage_id].drop(flight.actor)
            else:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref, force=True)
            message = f"it ran longer than its timeout of {timeout:g} s and was stopped"
            log.warning("%s: %s", flight.spec.name, message)
            yield Outcome(
                flight.spec,
                failure=Failure("timeout", message),
                started=flight.submitted,
                finished=now,
            )

    def _start_tasks(
        self,
        queue: deque[TaskSpec],
        pending: dict[object, Flight],
        pools: dict[int, ActorPool],
        demand: Callable[[TaskSpec], Demand] | None,
    ) -> None:
        """Hand Ray every queued task that fits now. With nothing in flight the first one
        starts whatever it asks (idle actors make room for it): the job never stalls."""
        usage = Usage.of(pending, pools, queue)

        def place(spec: TaskSpec) -> Flight | None:
            need = self._fit(demand(spec) if demand is not None else Demand())
            return self._start(spec, need, usage, pending, pools, force=False)

        # until the cluster is full: then no task can start (each needs a CPU or an idle actor)
        while usage.cpus + 1 <= self._cpus or any(p.idle for p in pools.values()):
            if take_first_fit(queue, place) is None:
                break
        if queue and not pending:
            for pool in pools.values():
                pool.drop_idle()
            spec = queue[0]
            need = self._fit(demand(spec) if demand is not None else Demand())
            usage = Usage.of(pending, pools, queue)
            if self._start(spec, need, usage, pending, pools, force=True) is None:
                raise RuntimeError(f"{spec.name} could not start on an idle Ray cluster")
            queue.popleft()

    def _start(
        self,
        spec: TaskSpec,
        need: Demand,
        usage: Usage,
        pending: dict[object, Flight],
        pools: dict[int, ActorPool],
        force: bool,
    ) -> Flight | None:
        """Start ``spec`` on Ray if it fits (always with ``force``); None when it must wait.
        ``usage`` counts what it takes."""
        op = pool_op(spec)
        data = None
        if op is not None:  # a callable class with concurrency: the stage's actors
            pool = pools.get(spec.stage_id)
            if pool is None:
                pool = pools[spec.stage_id] = ActorPool(self, op.concurrency, need)
            actor = pool.take()
            if actor is None and pool.can_grow:
                if force or self._room_for_actor(pool, spec, usage):
                    actor = usage.grow(pool)
            if actor is None:
                return None  # every actor of the stage is busy: the task waits for one
            while len(pool.actors) < pool.low and pool.can_grow:  # (min, max): min at once
                if not self._room_for_actor(pool, spec, usage):
                    break
                pool.give_back(usage.grow(pool))
            shipped, refs = _ship(spec)
            ref = actor.run.remote(cloudpickle.dumps(shipped), *refs)
        else:
            if not force and not self._room_for_task(need, usage):
                return None
            usage.cpus += max(1, need.slots)
            usage.gpus += need.gpus
            options = self._resources(need)
            options["max_retries"] = 0  # the job retries, and knows the attempt
            shipped, refs = _ship(spec)
            actor = None
            if spec.keep_output:  # in the object store, for the pipelined task that reads it
                # Ray may run it again to rebuild an output it lost (there is no file)
                options.update(num_returns=2, max_retries=3)
                ref, data = self._keeping.options(**options).remote(
                    cloudpickle.dumps(shipped), *refs
                )
            else:
                ref = self._remote.options(**options).remote(cloudpickle.dumps(shipped), *refs)
        flight = pending[ref] = Flight(spec, time.time(), need, actor, data)
        return flight

    def _fit(self, need: Demand) -> Demand:
        """``need`` cut to what the largest node holds (Ray would never place a task that
        asks for more than any one node has: it would wait for ever), with a warning."""
        most = self._node_most
        slots, gpus, memory = max(1, need.slots), need.gpus, need.memory
        if most["CPU"] and slots > most["CPU"]:
            self._warn_once("CPU", f"{slots} CPUs", f"{int(most['CPU'])}")
            slots = max(1, int(most["CPU"]))
        if most["GPU"] and gpus > most["GPU"]:
            self._warn_once("GPU", f"{gpus:g} GPUs", f"{most['GPU']:g}")
            gpus = float(most["GPU"])
        if most["memory"] and memory > most["memory"]:
            self._warn_once("memory", describe_size(memory), describe_size(most["memory"]))
            memory = int(most["memory"])
        return Demand(slots, gpus, memory)

    def _warn_once(self, what: str, asked: str, fits: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(
                "a task asks Ray for %s, more than any node of the cluster has; it gets %s",
                asked,
                fits,
            )

    @staticmethod
    def _resources(need: Demand) -> dict[str, object]:
        """Ray options for a (fitted) demand. Memory is reserved only when the stage asked
        for it (a ``memory_limit``, or a retry after running out): reserving the default
        share for every task would only lower concurrency."""
        options: dict[str, object] = {"num_cpus": max(1, need.slots)}
        if need.gpus > 0:
            options["num_gpus"] = need.gpus
        if need.memory > 0:
            options["memory"] = int(need.memory)
        return options

    def _room_for_task(self, need: Demand, usage: Usage) -> bool:
        if usage.cpus + max(1, need.slots) > self._cpus:
            return False
        return need.gpus <= 0 or usage.gpus + need.gpus <= len(self._gpus) + 1e-6

    def _room_for_actor(self, pool: ActorPool, spec: TaskSpec, usage: Usage) -> bool:
        """A new actor fits beside what runs, and leaves a CPU to the other stages while
        they have work (else a pool could hold every CPU while its input waits on them)."""
        if usage.cpus + pool.cpus > self._cpus:
            return False
        if pool.gpus > 0 and usage.gpus + pool.gpus > len(self._gpus) + 1e-6:
            return False
        others_busy = bool(usage.working - {spec.stage_id})
        return not others_busy or usage.actor_cpus + pool.cpus <= self._cpus - 1

    def _outcome(
        self, ref: object, spec: TaskSpec, submitted: float, data: object | None = None
    ) -> Outcome:
        try:
            pid, started, finished, payload = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the worker or its node died
            log.warning("%s: Ray could not run it (%s); it will be retried", spec.name, exc)
            message = f"the Ray task of {spec.name} failed: {type(exc).__name__}: {exc}"
            return Outcome(
                spec,
                failure=Failure("system", message),
                started=submitted,
                finished=time.time(),
            )
        status, value = cloudpickle.loads(payload)
        outcome = Outcome(spec, pid=pid, started=started, finished=finished)
        if status == "ok":
            if isinstance(value.output.partition, ObjectPartition):
                value.output.partition.ref = data
            outcome.result = value
        else:
            outcome.failure = value
        return outcome

    def shutdown(self) -> None:
        """Disconnect from Ray; Ray itself stops only if this process started it."""
        global _users, _started_here, _connected_here
        if self._closed:
            return
        self._closed = True
        self._inline.shutdown()
        with _lock:
            _users -= 1
            if _users <= 0:
                _users = 0
                if _connected_here and self.ray.is_initialized():
                    self.ray.shutdown()
                _started_here = _connected_here = False


def _time_left(pending: dict[object, Flight]) -> float | None:
    """Seconds until the first task in flight runs out of time (None: none can)."""
    deadlines = [f.submitted + f.spec.timeout for f in pending.values() if f.spec.timeout]
    return max(0.0, min(deadlines) - time.time()) if deadlines else None


def _dashboard_url(context: object) -> str | None:
    """The dashboard of the cluster ``ray.init`` attached to, if it runs one."""
    url = getattr(context, "dashboard_url", None) or None
    if url and "://" not in url:
        url = f"http://{url}"
    return url
