"""Outputs appear complete or not at all: tasks write into a staging directory beside the
destination (same filesystem), and the job commits it with renames.

Writers of one destination take turns: a commit holds a lock on the destination's parent
directory, re-reads what is there, and only then renames, so two jobs writing one path
never see each other half done. A staging directory records its writer (process id and
start time); the next write to the same path removes those of writers that died (killed,
or their machine lost power) instead of leaving them behind for ever."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator

from millpond.errors import OutputExistsError, PlanError, UnsafePathError
from millpond.io.safety import check_replaceable, protected_reason, remove_path

MODES = ("error", "overwrite", "append", "ignore")
STAGING_MARK = ".millpond-staging-"
TRASH_MARK = ".millpond-old-"
WRITER_FILE = ".millpond-writer"  # inside a staging directory: who is writing it
#: a staging directory without a writer record is stale once it is this old (seconds)
UNRECORDED_STALE_AFTER_S = 3600.0


def destination(path: str) -> str:
    """``path`` as an absolute, normalized path (``"//"`` is the root, ``""`` the cwd)."""
    path = os.fspath(path)
    if path.startswith("file://"):  # a URL of this machine's files: the path it names
        path = path[len("file://") :]
    absolute = os.path.abspath(os.path.expanduser(path))
    return "/" if absolute.strip("/") == "" else absolute.rstrip("/")


def check_mode(mode: str) -> None:
    """Refuse a write ``mode`` that is not one of :data:`MODES`."""
    if mode not in MODES:
        raise PlanError(f"mode must be one of {MODES}, got {mode!r}")


def check_destination(path: str, mode: str, inputs: Iterable[str] = ()) -> bool:
    """Validate ``mode`` against what is at ``path`` (an empty directory counts as nothing
    there); False means nothing should be written.
    ``overwrite`` of something that is not a replaceable dataset, and any write to a
    protected path (the root, a home or working directory), fail here, before any work."""
    check_mode(mode)
    empty = _empty_directory(path)  # filled in place, whatever the mode: never the root…
    reason = protected_reason(path) if mode in ("append", "ignore") or empty else None
    if reason is not None:  # overwrite: check_replaceable below, with the job's inputs
        raise UnsafePathError(f"refusing to write to {path!r} with mode={mode!r}: {reason}")
    if os.path.lexists(path) and not empty:
        if mode == "error":
            raise OutputExistsError(
                f"output path {path!r} already exists; pass mode='overwrite' to replace it or mode='append' to add to it"
            )
        if mode == "ignore":
            return False
        if mode == "append" and not os.path.isdir(path):
            raise OutputExistsError(
                f"cannot append to {path!r}: it is a file, not a dataset directory"
            )
        if mode == "overwrite":
            check_replaceable(path, inputs)
    return True


def _empty_directory(path: str) -> bool:
    """A real directory with nothing in it (as a user creates one for a job's output, or
    smallpond's examples do): a write of any mode fills it, as if it were not there."""
    return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)


def staging_dir(path: str, job_id: str) -> str:
    """A hidden directory beside ``path`` that tasks write into before the commit."""
    parent, name = os.path.split(destination(path))
    return os.path.join(parent, f".{name}{STAGING_MARK}{job_id}")


def unique_write_id() -> str:
    """A name part no earlier write can have used: the time and 48 random bits."""
    return time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:12]


# -- writers ------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), to tell it from a later
    process that reuses its id; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _writer_record() -> dict[str, object]:
    pid = os.getpid()
    return {"pid": pid, "start": _process_start(pid), "host": socket.gethostname()}


def writer_alive(record: dict) -> bool:
    """Whether the writer a record names may still run. A writer on another machine is
    taken to be alive: this machine cannot know."""
    if record.get("host") != socket.gethostname():
        return True
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = record.get("start")
    return start is None or _process_start(pid) in (None, start)


def _is_stale(entry: str) -> bool:
    try:
        with open(os.path.join(entry, WRITER_FILE)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict):
        return not writer_alive(record)
    try:
        return time.time() - os.lstat(entry).st_mtime > UNRECORDED_STALE_AFTER_S
    except OSError:
        return False


def remove_stale(path: str, keep: str | None = None) -> list[str]:
    """Remove the staging (and trash) directories beside ``path`` left by writers that
    died; ``keep`` (this job's own, which a resumed job reuses) stays. Returns them."""
    parent, name = os.path.split(destination(path))
    prefixes = (f".{name}{STAGING_MARK}", f".{name}{TRASH_MARK}")
    removed = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return removed
    for entry in entries:
        full = os.path.join(parent, entry)
        if not entry.startswith(prefixes) or full == keep or not _is_stale(full):
            continue
        try:
            remove_path(full)
            removed.append(full)
        except OSError:  # another writer removed it first, or it holds foreign files
            continue
    return removed


def prepare(staging: str, path: str) -> None:
    """Before a write's tasks start: clear the leftovers of dead writers of ``path`` and
    create ``staging`` with this process's writer record."""
    with destination_lock(path):
        remove_stale(path, keep=staging)
        if os.path.isdir(staging):  # a resumed job's own
            _write_record(staging)
            return
        # made whole with its record, then renamed into place: a writer killed at any
        # moment leaves either nothing or a staging directory that says whose it is
        parent, name = os.path.split(staging)
        pending = os.path.join(parent, f"{name}.{os.getpid()}.new")
        os.makedirs(pending, exist_ok=True)
        _write_record(pending)
        os.replace(pending, staging)


def _write_record(directory: str) -> None:
    tmp = os.path.join(directory, f"{WRITER_FILE}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(_writer_record(), f)
    os.replace(tmp, os.path.join(directory, WRITER_FILE))


@contextlib.contextmanager
def destination_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on the destination's parent directory (``flock`` on the
    directory itself: nothing is left behind). Where a filesystem cannot lock a directory,
    a lock file beside the destination serves instead."""
    parent, name = os.path.split(destination(path))
    os.makedirs(parent, exist_ok=True)
    fd = os.open(parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.close(fd)
            fd = os.open(os.path.join(parent, f".{name}.millpond-lock"), os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# -- commit -------------------------------------------------------------------


def _merge_task_dirs(staging: str) -> None:
    """Partitioned writes go to one folder per task; fold them into one ``key=value`` tree."""
    for entry in sorted(os.listdir(staging)):
        task_dir = os.path.join(staging, entry)
        if not (entry.startswith("_task-") and os.path.isdir(task_dir)):
            continue
        for root, _dirs, files in os.walk(task_dir):
            rel = os.path.relpath(root, task_dir)
            target = os.path.normpath(os.path.join(staging, rel))
            os.makedirs(target, exist_ok=True)
            for f in files:
                os.replace(os.path.join(root, f), os.path.join(target, f))
        remove_path(task_dir, within=staging)


def _move_no_replace(source: str, target: str) -> None:
    """Rename ``source`` to ``target``, failing rather than replacing an existing file."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise OutputExistsError(
            f"cannot append {os.path.basename(source)!r}: {target!r} already exists "
            "(nothing was replaced)"
        ) from None
    except OSError as exc:  # a filesystem without hard links
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise OutputExistsError(f"cannot append: {target!r} already exists") from None
        os.replace(source, target)
        return
    os.remove(source)  # the second name of a file that lives on under ``target``: a move


def commit(staging: str, path: str, mode: str, inputs: Iterable[str] = ()) -> bool:
    """Move the staged output into place (atomically; file by file for ``append``), under
    the destination's lock. Returns False when nothing was written (``ignore`` found the
    path taken by another writer). The caller removes ``staging`` if this raises."""
    path = destination(path)
    with destination_lock(path):
        _merge_task_dirs(staging)
        remove_path(os.path.join(staging, WRITER_FILE), within=staging)
        exists = os.path.lexists(path)
        if exists and _empty_directory(path):
            mode = "append"  # a folder made ready for the output: fill it
        if mode == "append" and exists:
            if not os.path.isdir(path):
                raise OutputExistsError(f"cannot append to {path!r}: it is a file")
            for root, _dirs, files in os.walk(staging):
                target = os.path.normpath(os.path.join(path, os.path.relpath(root, staging)))
                os.makedirs(target, exist_ok=True)
                for f in files:
                    _move_no_replace(os.path.join(root, f), os.path.join(target, f))
            remove_path(staging)
            return True
        if exists and mode == "ignore":
            return False
        if exists and mode == "error":
            raise OutputExistsError(
                f"output path {path!r} was created by another writer while this job ran; "
                "this job's output was discarded and nothing at the path was changed"
            )
        if exists and mode == "overwrite":
            check_replaceable(path, inputs)
            parent, name = os.path.split(path)
            trash = os.path.join(parent, f".{name}{TRASH_MARK}{uuid.uuid4().hex[:12]}")
            os.replace(path, trash)
            if os.path.isdir(trash) and not os.path.islink(trash):
                _write_record(trash)  # a crash before its removal leaves it to be cleaned
            os.replace(staging, path)
            remove_path(trash)
            return True
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(staging, path)
        return True


def abort(staging: str) -> None:
    """Remove a staging directory (a failed or discarded write); never raises."""
    try:
        remove_path(staging)
    except OSError:
        pass
