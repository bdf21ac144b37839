"""What this machine gives a session: the CPUs this process may use, and its memory as
capped by the cgroup (v1 or v2) the process runs in — a container's or a systemd slice's
limit, not the host's RAM, is what a job may fill."""

from __future__ import annotations

import os


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
