"""The per-task runtime: a DuckDB cursor with the task's budget, view registration, schema
probes, and the per-process cache of user functions."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from millpond.io.sqltext import quote_ident
from millpond.operators.base import Step, UserCodeFailure, call_user

_UDF_CACHE: dict[str, Any] = {}
_UDF_LOCK = threading.Lock()
_names = itertools.count()


@dataclass(frozen=True)
class ClassWithArguments:
    """A ``map_batches`` class with its ``fn_constructor_args``/``fn_constructor_kwargs``,
    as it travels to the workers (and Ray actors), where :func:`load_udf` constructs it
    once per process with them."""

    cls: type
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def construct(self) -> Any:
        return self.cls(*self.args, **self.kwargs)


def load_udf(payload: bytes, step: Step) -> Any:
    """Unpickle a user function once per process. A class is instantiated here, once (with
    its ``fn_constructor_args``/``fn_constructor_kwargs`` when given), so a model it loads
    in ``__init__`` is loaded once per worker rather than once per batch.
    Failing to unpickle it or to construct it is the user's error, named by ``step``."""
    key = hashlib.sha1(payload).hexdigest()
    with _UDF_LOCK:
        obj = _UDF_CACHE.get(key)
        if obj is None:
            try:
                import cloudpickle

                obj = cloudpickle.loads(payload)
            except ModuleNotFoundError as exc:
                exc.add_note(
                    f"the worker cannot import the module of the function of {step.label}: "
                    "functions and classes of an importable module travel by reference, so "
                    "every worker (every Ray node) needs that module on its Python path"
                )
                raise UserCodeFailure(exc, step, traceback.format_exc()) from None
            if isinstance(obj, type):
                obj = call_user(step, obj)
            elif isinstance(obj, ClassWithArguments):
                obj = call_user(step, obj.construct)
            _UDF_CACHE[key] = obj
        return obj


class TaskContext:
    """What operators of one task share: the connection, the task's identity and inputs."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        stage_id: int,
        task_index: int,
        batch_size: int,
        slot_sql: list[str] | None = None,
        interruptible: list[duckdb.DuckDBPyConnection] | None = None,
    ) -> None:
        self.con = con
        #: every cursor the task queries on, for whoever may have to interrupt it
        self.interruptible = interruptible
        if interruptible is not None:
            interruptible.append(con)
        self.stage_id = stage_id
        self.task_index = task_index
        self.batch_size = batch_size
        self.slot_sql: list[str] = slot_sql or []
        self._keep_alive: list[Any] = []
        self._views: dict[str, Any] = {}
        self._sql_views: list[tuple[str, str]] = []
        #: Python UDFs registered on this task's cursor: DuckDB keeps them in the catalog
        #: after the cursor closes, so they are removed at the end of the task
        self.functions: list[str] = []
        #: each step's query, bound only if the task's whole query fails to (naming the step)
        self.unbound: list[tuple[str, list]] = []

    def register(self, data: pa.Table | pa.RecordBatchReader) -> str:
        """Expose an Arrow table or stream to SQL under a fresh view name (on every cursor
        of this task: views are local to a connection)."""
        name = f"__mp_view_{next(_names)}"
        self.con.register(name, data)
        self._views[name] = data
        return quote_ident(name)

    def define_view(self, sql: str) -> str:
        """A named view of a query (smallpond queries refer to their inputs by name)."""
        name = quote_ident(f"__input_{self.stage_id}_{self.task_index}_{next(_names)}")
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {sql}").fetchall()
        self._sql_views.append((name, sql))
        return name

    def columns(self, sql: str) -> list[str]:
        """Column names of a query, by binding it (nothing is executed)."""
        return [row[0] for row in self.con.sql(f"DESCRIBE {sql}").fetchall()]

    def schema(self, sql: str) -> pa.Schema:
        """The Arrow schema a query produces, without executing it: a stream registered
        under the query must not lose batches to a probe."""
        rows = self.con.sql(f"DESCRIBE {sql}").fetchall()
        if not rows:
            return pa.schema([])
        select = ", ".join(
            f"CAST(NULL AS {type_}) AS {quote_ident(name)}" for name, type_, *_ in rows
        )
        return self.con.sql(f"SELECT {select} LIMIT 0").to_arrow_table().schema

    def reader(self, sql: str, batch_size: int | None = None) -> pa.RecordBatchReader:
        """Stream a query's result as Arrow batches, on a cursor of its own so that the
        consumer may keep using the main connection."""
        cursor = self.con.cursor()
        self._keep_alive.append(cursor)
        if self.interruptible is not None:
            self.interruptible.append(cursor)
        for name, data in self._views.items():
            cursor.register(name, data)
        for name, definition in self._sql_views:
            cursor.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {definition}").fetchall()
        return cursor.sql(sql).to_arrow_reader(batch_size or self.batch_size)

    def close(self) -> None:
        for name in self.functions:
            try:
                self.con.remove_function(name)
            except duckdb.Error:
                pass
        self.functions.clear()
        for obj in self._keep_alive:
            if isinstance(obj, duckdb.DuckDBPyConnection):
                try:
                    obj.close()
                except duckdb.Error:
                    pass
        self._keep_alive.clear()
        self._views.clear()


class RuntimeContext(TaskContext):
    """The runtime context user code sees (smallpond's ``RuntimeContext``): the task's
    identity, its resource budget and a private working directory."""

    spec: Any  # the task's TaskSpec (millpond.execution.task_run)
    #: the smallpond task object of the node running now (millpond.compat.task)
    _task: Any = None

    @property
    def task(self) -> Any:
        """The running node's task object (smallpond's ``runtime_ctx.task``: its
        ``cpu_limit``, ``partition_infos``, ``perf_metrics``…); None for steps of
        millpond's own API, which have no task object."""
        return self._task

    def set_current_task(self, task: Any = None) -> RuntimeContext:
        """Make ``task`` the one ``task`` returns; returns this context (smallpond's call)."""
        self._task = task
        return self

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def task_id(self) -> str:
        return f"{self.spec.job_id}-s{self.spec.stage_id}-t{self.spec.index}"

    @property
    def partition_index(self) -> int:
        return self.spec.index

    @property
    def attempt(self) -> int:
        return self.spec.attempt

    @property
    def usable_cpu_count(self) -> int:
        return max(1, int(self.spec.threads))

    @property
    def usable_memory_size(self) -> int:
        return self.spec.memory_limit

    @property
    def job_dir(self) -> str:
        return os.path.join(os.path.dirname(self.spec.temp_dir), self.spec.job_id)

    @property
    def work_dir(self) -> str:
        """A directory of this task attempt's own (created on first use)."""
        path = os.path.join(
            self.job_dir,
            f"stage-{self.spec.stage_id}",
            f"work-{self.spec.index:05d}-a{self.spec.attempt}",
        )
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path
