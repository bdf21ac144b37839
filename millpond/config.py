"""Session settings: explicit arguments win over ``MILLPOND_*`` environment variables,
which win over defaults sized to the machine."""

from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass, field

from millpond.common import DEFAULT_BATCH_SIZE, DEFAULT_MAX_RETRY, GB, MB

ENV_PREFIX = "MILLPOND_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def machine_cpus() -> int:
    """CPUs this process may use (respects affinity masks, e.g. in containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit value (about 2**63);
# anything this large cannot be a real limit.
_CGROUP_UNLIMITED = 2**62


def _read_text(path: str) -> str | None:
    """A small kernel file's contents, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _unescape_mountinfo(field: str) -> str:
    """Undo the octal escapes the kernel writes in mountinfo paths (space, tab, newline, \\)."""
    for code in ("040", "011", "012", "134"):  # backslash last: it may precede the others
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def _cgroup_mounts(root: str) -> list[tuple[str, str, str, set[str]]]:
    """``(mount root, mount point, fs type, super options)`` of every cgroup mount."""
    mounts = []
    for line in (_read_text(os.path.join(root, "proc/self/mountinfo")) or "").splitlines():
        fields = line.split()
        # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 4 or fields[sep + 1] not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            (
                _unescape_mountinfo(fields[3]),
                _unescape_mountinfo(fields[4]),
                fields[sep + 1],
                set(fields[sep + 3].split(",")),
            )
        )
    return mounts


def _smallest_limit(
    root: str, mount_root: str, mount_point: str, path: str, name: str
) -> int | None:
    """Smallest limit file ``name`` from the cgroup at ``path`` up to the mount point.

    ``path`` (from /proc/self/cgroup) is relative to the hierarchy root, while the mount shows
    the hierarchy from ``mount_root`` down (in a container often the cgroup itself), so only
    the part below ``mount_root`` is a directory under the mount point. A parent's limit
    binds its children, hence the walk up.
    """
    path_parts = [p for p in path.split("/") if p not in ("", ".")]
    root_parts = [p for p in mount_root.split("/") if p not in ("", ".")]
    if ".." in path_parts or path_parts[: len(root_parts)] != root_parts:
        return None  # our cgroup is not visible through this mount
    parts = path_parts[len(root_parts) :]
    base = os.path.join(root, mount_point.lstrip("/"))
    limits = []
    for depth in range(len(parts), -1, -1):
        raw = (_read_text(os.path.join(base, *parts[:depth], name)) or "").strip()
        if raw.isdigit() and int(raw) < _CGROUP_UNLIMITED:
            limits.append(int(raw))
    return min(limits, default=None)


def _cgroup_memory_limit(root: str = "/") -> int | None:
    """The memory limit of the cgroup this process is in (v1 or v2), or None if unlimited.

    ``root`` is where ``proc/`` and the cgroup mounts are looked up, so tests can build a fake
    tree. Only the hard limits count (v2 ``memory.max``, v1 ``memory.limit_in_bytes``); v2
    ``memory.high`` is left out on purpose: it is a soft threshold where the kernel reclaims
    (page cache first) and throttles instead of killing, so going past it slows a job rather
    than failing it, and its common automatic setting (Kubernetes MemoryQoS, 90% of the limit)
    already lies above the 80% the default ``memory_limit`` takes.
    """
    mounts = _cgroup_mounts(root)
    limits = []
    for line in (_read_text(os.path.join(root, "proc/self/cgroup")) or "").splitlines():
        # hierarchy-ID:controller-list:cgroup-path; v2 is "0::/path"
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path:
            continue
        if hierarchy == "0" and not controllers:
            candidates = [(r, p, "memory.max") for r, p, t, _ in mounts if t == "cgroup2"]
        elif "memory" in controllers.split(","):
            candidates = [
                (r, p, "memory.limit_in_bytes")
                for r, p, t, opts in mounts
                if t == "cgroup" and "memory" in opts
            ]
        else:
            continue
        for mount_root, mount_point, name in candidates:
            limit = _smallest_limit(root, mount_root, mount_point, path, name)
            if limit is not None:
                limits.append(limit)
    return min(limits, default=None)


def machine_memory() -> int:
    """Physical memory in bytes, capped by the limit of the cgroup this process is in."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_memory_limit("/")
    return total if limit is None else min(total, limit)


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
    #: seconds a task may run before it is stopped and retried (None: no limit)
    task_timeout: float | None = None

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
        if config.task_timeout is not None and not config.task_timeout > 0:
            raise ValueError(f"task_timeout must be > 0 seconds, got {config.task_timeout!r}")
        if config.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {config.engine!r}")
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
