"""Session settings: explicit arguments win over ``MILLPOND_*`` environment variables,
which win over defaults sized to the machine."""

from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass, field

from millpond.machine import machine_cpus, machine_memory

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
TB = 1024 * GB

DEFAULT_BATCH_SIZE = 122_880
"""Rows per Arrow record batch when streaming between DuckDB and Python (60 DuckDB vectors)."""

DEFAULT_ROW_GROUP_SIZE = 122_880
"""Rows per Parquet row group for files millpond writes."""

DEFAULT_MAX_RETRY = 3
"""How many times a task that failed for a system reason is retried."""

ENV_PREFIX = "MILLPOND_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_size(value: str | int | float) -> int:
    """Parse ``"512MB"``, ``"2GiB"``, ``"1.5g"`` or a plain number of bytes."""
    if isinstance(value, (int, float)):
        return int(value)
    text = value.strip().lower().replace(" ", "")
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    for suffix in ("ib", "b"):
        if text.endswith(suffix) and len(text) > len(suffix) and text[-len(suffix) - 1] in units:
            text = text[: -len(suffix)]
            break
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text.rstrip("b")))


def _parse_bool(name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{ENV_PREFIX}{name}={value!r}: expected one of {sorted(_TRUE | _FALSE)}")


def is_url(path: str) -> bool:
    """A path of a remote store (``s3://…``, ``gs://…``), not of this machine's files."""
    scheme, sep, _rest = path.partition("://")
    return bool(sep) and scheme not in ("file", "local") and scheme.isidentifier()


def default_data_root() -> str:
    """``$TMPDIR/millpond-$USER``: private to the user (see :mod:`millpond.io.scratch`)."""
    try:
        user = getpass.getuser()
    except Exception:  # pragma: no cover - no user database
        user = str(os.getuid())
    return os.path.join(tempfile.gettempdir(), f"millpond-{user}")


@dataclass
class SessionConfig:
    """Everything a session needs to plan and run jobs; see :func:`millpond.init`."""

    data_root: str = field(default_factory=default_data_root)
    num_executors: int = field(default_factory=machine_cpus)
    memory_limit: int = field(default_factory=lambda: int(machine_memory() * 0.8))
    engine: str = "local"
    progress: bool | None = None
    max_retry: int = DEFAULT_MAX_RETRY
    batch_size: int = DEFAULT_BATCH_SIZE
    shuffle_partitions: int | None = None
    inline_bytes: int = 32 * MB
    target_partition_bytes: int = 256 * MB
    keep_intermediate: bool = False
    fail_fast: bool = False  # no retries at all: the first failure of any task ends the job
    pipelining: bool = True  # pipelined stages start beside their producer (False: after it)
    ray_address: str | None = None
    #: GPUs declared with ``init(num_gpus=N)`` (None: detected): devices 0..N-1 on the
    #: embedded engine, the GPUs of the Ray instance millpond starts
    num_gpus: int | None = None
    #: seconds a task may run before it is stopped and retried (None: no limit)
    task_timeout: float | None = None
    #: a data_root given as a URL (``s3://bucket/root``): the jobs' reports are published
    #: there, while their working files go to ``data_root``, a private local directory
    remote_root: str | None = None

    @property
    def memory_per_task(self) -> int:
        """The DuckDB memory budget of one task when every executor is busy."""
        return max(64 * MB, self.memory_limit // max(1, self.num_executors))

    @property
    def default_shuffle_partitions(self) -> int:
        return self.shuffle_partitions or max(8, 2 * self.num_executors)

    @classmethod
    def resolve(cls, **explicit: object) -> SessionConfig:
        """Merge explicit arguments (``None`` means unset) over ``MILLPOND_*`` variables."""
        config = cls()
        env = os.environ
        converters = {
            "data_root": str,
            "num_executors": int,
            "memory_limit": parse_size,
            "engine": str,
            "progress": lambda v: _parse_bool("PROGRESS", v),
            "max_retry": int,
            "batch_size": int,
            "shuffle_partitions": int,
            "inline_bytes": parse_size,
            "target_partition_bytes": parse_size,
            "keep_intermediate": lambda v: _parse_bool("KEEP_INTERMEDIATE", v),
            "fail_fast": lambda v: _parse_bool("FAIL_FAST", v),
            "pipelining": lambda v: _parse_bool("PIPELINING", v),
            "ray_address": str,
            "num_gpus": int,
            "task_timeout": float,
        }
        for name, convert in converters.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw not in (None, ""):
                setattr(config, name, convert(raw))
        for name, value in explicit.items():
            if value is None:
                continue
            if name not in converters:
                raise TypeError(f"init() got an unexpected setting {name!r}")
            if name in ("memory_limit", "inline_bytes", "target_partition_bytes"):
                value = parse_size(value)  # type: ignore[arg-type]
            setattr(config, name, value)
        if config.num_executors < 1:
            raise ValueError(f"num_executors must be >= 1, got {config.num_executors}")
        if config.memory_limit < 16 * MB:
            raise ValueError(f"memory_limit must be at least 16MB, got {config.memory_limit} bytes")
        if config.num_gpus is not None and (
            isinstance(config.num_gpus, bool)
            or not isinstance(config.num_gpus, int)
            or config.num_gpus < 0
        ):
            raise ValueError(f"num_gpus must be an integer >= 0, got {config.num_gpus!r}")
        if config.task_timeout is not None and not config.task_timeout > 0:
            raise ValueError(f"task_timeout must be > 0 seconds, got {config.task_timeout!r}")
        if config.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {config.engine!r}")
        if is_url(config.data_root):  # an object store: the scratch space stays local
            config.remote_root = config.data_root.rstrip("/")
            config.data_root = default_data_root()
        config.data_root = os.path.abspath(os.path.expanduser(config.data_root))
        return config


def describe_size(nbytes: float) -> str:
    """Human-readable byte count for logs and explain()."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(nbytes) < 1024 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"  # pragma: no cover


__all__ = ["SessionConfig", "parse_size", "machine_cpus", "machine_memory", "describe_size", "GB"]
