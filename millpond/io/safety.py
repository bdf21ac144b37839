"""The one guarded way millpond deletes a path, and what ``mode="overwrite"`` may replace.

Every delete of a path goes through :func:`remove_path`. It never removes the filesystem
root, a home directory, the working directory or anything that contains one of them; a
path outside millpond's own scratch space (``data_root``) must moreover look like a
dataset: data files of a format millpond writes, their markers, ``key=value`` folders.
A careless ``write_parquet("~", mode="overwrite")`` or a broken clean-up therefore costs
an error, never a user's files."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
from collections.abc import Iterable

from millpond.errors import UnsafePathError

#: files of the formats millpond writes (and reads back as datasets)
DATA_SUFFIXES = (
    ".parquet",
    ".pq",
    ".parq",
    ".csv",
    ".tsv",
    ".json",
    ".jsonl",
    ".ndjson",
    ".arrow",
    ".feather",
    ".tar",
)
#: markers that live inside datasets: Spark/Hadoop's, Parquet summaries, millpond's own
MARKER_NAMES = frozenset({"_SUCCESS", "_metadata", "_common_metadata", ".MANIFEST.txt"})
MARKER_SUFFIXES = (".crc",)
MARKER_PREFIXES = (".millpond-", "_millpond")
#: a staged partitioned write keeps one folder per task until the commit merges them
TASK_FOLDER_PREFIX = "_task-"
#: in an output folder, the names of the files millpond copied there that are not data
#: files (what a smallpond PythonScriptNode wrote): an overwrite may replace those too
COPIED_FILES_LIST = ".millpond-files.txt"


def _real(path: str) -> str:
    """The real path of ``path``'s parent joined with its own name: a final symbolic link
    is the link itself (deleting it never touches its target)."""
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    return os.path.join(os.path.realpath(parent), name) if name else os.path.realpath(absolute)


def is_within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies below it (both taken as real paths)."""
    return _inside(_real(path), os.path.realpath(root))


def _home_directories() -> set[str]:
    homes = {os.path.expanduser("~")}
    if os.environ.get("HOME"):
        homes.add(os.environ["HOME"])
    try:
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:  # pragma: no cover - a uid without an entry
        pass
    return {os.path.realpath(h) for h in homes if h}


def protected_reason(path: str, inputs: Iterable[str] = ()) -> str | None:
    """Why ``path`` must never be deleted or replaced, or None. Protected: the filesystem
    root, a home directory, the working directory and every folder above them, and every
    input of the job and every folder above one."""
    real = _real(path)  # a link is judged as itself: removing it never touches its target
    if real == os.path.dirname(real):
        return "it is the filesystem root"
    for home in _home_directories():
        if real == home:
            return "it is the home directory"
        if _inside(home, real):
            return f"it contains the home directory {home!r}"
    cwd = os.path.realpath(os.getcwd())
    if real == cwd:
        return "it is the current working directory"
    if _inside(cwd, real):
        return f"it contains the current working directory {cwd!r}"
    for item in inputs:
        if "://" not in item and _inside(os.path.realpath(item), real):
            return f"it holds {item!r}, an input of this job"
    return None


def _inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both already real paths)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def is_data_file(name: str) -> bool:
    """Whether a file name is a data file or a marker of a dataset millpond writes."""
    lower = name.lower()
    return (
        lower.endswith(DATA_SUFFIXES)
        or name in MARKER_NAMES
        or lower.endswith(MARKER_SUFFIXES)
        or name.startswith(MARKER_PREFIXES)
    )


def foreign_entry(path: str) -> str | None:
    """The first entry below ``path`` that no dataset millpond writes would hold (a file
    of another kind, a folder not named ``key=value``, a symbolic link), or None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:  # gone meanwhile (another writer's commit renames it away)
        return None
    if stat.S_ISLNK(mode):
        return path
    if not stat.S_ISDIR(mode):
        return None if is_data_file(os.path.basename(path)) else path
    copied = copied_files(path)
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs):
            full = os.path.join(root, name)
            if os.path.islink(full) or not ("=" in name or name.startswith(TASK_FOLDER_PREFIX)):
                return full
        for name in sorted(files):
            full = os.path.join(root, name)
            listed = root == path and name in copied
            if os.path.islink(full) or not (is_data_file(name) or listed):
                return full
    return None


def copied_files(folder: str) -> frozenset[str]:
    """The names in ``folder``'s own :data:`COPIED_FILES_LIST`: files millpond copied
    there. Honoured only when the list is a regular file of this user's, so a list that
    someone else planted names nothing."""
    listing = os.path.join(folder, COPIED_FILES_LIST)
    try:
        info = os.lstat(listing)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return frozenset()
        with open(listing, encoding="utf-8") as f:
            names = {line.rstrip("\n") for line in f}
    except (OSError, UnicodeDecodeError):
        return frozenset()
    return frozenset(n for n in names if n and os.sep not in n and n not in (".", ".."))


def check_replaceable(path: str, inputs: Iterable[str] = ()) -> None:
    """Raise :class:`UnsafePathError` unless ``path`` (if it exists) may be replaced by a
    new dataset: it is not protected (see :func:`protected_reason`) and it holds nothing
    but what a dataset holds."""
    if not os.path.lexists(path):
        return
    reason = protected_reason(path, inputs)
    if reason is not None:
        raise UnsafePathError(f"refusing to overwrite {path!r}: {reason}")
    foreign = foreign_entry(path)
    if foreign is not None:
        kind = "link" if os.path.islink(foreign) else "folder" if os.path.isdir(foreign) else "file"
        raise UnsafePathError(
            f"refusing to overwrite {path!r}: it is not a dataset — it holds {foreign!r}, a {kind} "
            "that is not a data file millpond writes (Parquet, CSV, JSON) or one of their "
            "markers; remove it yourself or write somewhere else"
        )


def remove_path(path: str, *, within: str | None = None) -> None:
    """Delete ``path`` (a file, a link or a folder; one already gone is fine): the one
    function that deletes.

    Never the filesystem root, a home directory, the working directory or a folder that
    contains one of them. With ``within`` (millpond's own scratch space, e.g. a job
    directory) ``path`` must lie strictly inside it; without, it must hold only what a
    dataset holds (see :func:`foreign_entry`). Anything else raises
    :class:`UnsafePathError` and deletes nothing."""
    if not os.path.lexists(path):
        return
    reason = protected_reason(path)
    if reason is not None:
        raise UnsafePathError(f"refusing to delete {path!r}: {reason}")
    real = _real(path)
    if within is not None:
        root = os.path.realpath(within)
        if real == root or not _inside(real, root):
            raise UnsafePathError(f"refusing to delete {path!r}: it is not inside {within!r}")
    else:
        foreign = foreign_entry(path)
        if foreign is not None:
            raise UnsafePathError(
                f"refusing to delete {path!r}: it is not a dataset millpond wrote "
                f"(it holds {foreign!r})"
            )
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=_vanished_ok)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _vanished_ok(function, path: str, exc_info) -> None:
    """rmtree's error handler: an entry that is already gone is fine, anything else not."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def remove_objects(fs, dataset_url: str, names: Iterable[str]) -> None:
    """Delete objects of an object-store dataset: the remote counterpart of
    :func:`remove_path`, and the one function that deletes there. Each name must be a path
    inside ``dataset_url`` (no ``..``, not absolute) of a data file or a dataset marker,
    and the dataset must be a folder, not a whole bucket; anything else raises
    :class:`UnsafePathError` and deletes nothing."""
    from millpond.io.storage import split_protocol, with_retries

    protocol, rest = split_protocol(dataset_url)
    root = rest.strip("/")
    if protocol in (None, "file", "local") or "/" not in root:
        raise UnsafePathError(f"refusing to delete in {dataset_url!r}: not a dataset folder")
    targets = []
    for name in names:
        parts = name.split("/")
        if not name or name.startswith("/") or ".." in parts or not is_data_file(parts[-1]):
            raise UnsafePathError(
                f"refusing to delete {name!r} in {dataset_url!r}: not a data file of the dataset"
            )
        targets.append(f"{root}/{name}")
    if targets:
        with_retries(
            lambda: fs.rm(targets), f"deleting {len(targets)} object(s) in {dataset_url!r}"
        )
