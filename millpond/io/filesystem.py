"""Path resolution over fsspec: every input may be a local path, a mount or a URL."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from millpond.errors import InputNotFoundError
from millpond.io.manifest import committed_filter, written_by
from millpond.io.storage import (
    Storage,
    default_storage,
    is_local,
    split_protocol,
    with_retries,
)

__all__ = ["FileInfo", "filesystem_for", "is_local", "resolve_files", "split_protocol"]

if TYPE_CHECKING:
    import fsspec


_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class FileInfo:
    """One input file and its size in bytes (used to plan balanced partitions)."""

    path: str
    size: int


def filesystem_for(
    path: str, storage_options: Storage | Mapping[str, Any] | None = None
) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem serving ``path``: with ``storage_options`` (a dict of fsspec
    options or a :class:`Storage`), else with the session's (``init(storage_options=)``)."""
    storage = default_storage() if storage_options is None else Storage.of(storage_options)
    return storage.filesystem(path)


def _with_protocol(path: str, original: str) -> str:
    """fsspec drops the protocol from listed paths; put it back so DuckDB sees a URL."""
    protocol, _ = split_protocol(original)
    if protocol in (None, "file", "local"):
        return os.path.abspath(path) if not path.startswith("/") else path
    if split_protocol(path)[0]:
        return path
    return f"{protocol}://{path.lstrip('/') if protocol != 'memory' else path}"


def as_path_list(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    result = [os.fspath(p) for p in paths]
    if not result:
        raise InputNotFoundError("no input paths were given (an empty list)")
    return result


def resolve_files(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    extensions: tuple[str, ...] = (),
    recursive: bool = False,
    storage_options: Storage | Mapping[str, Any] | None = None,
    glob: bool = True,
) -> list[FileInfo]:
    """Expand lists, globs and directories into files, in a deterministic order.

    A pattern that matches nothing raises :class:`InputNotFoundError` naming the pattern
    (a pattern that matches nothing but names an existing file is that file). With
    ``glob=False`` every path is taken literally: ``*``, ``?`` and ``[`` are characters of
    its name. Directories contribute the files with one of ``extensions`` (all non-hidden
    files when empty), descending into subdirectories when ``recursive`` (or for hive-style
    layouts, whose directories contain ``=``). The files found are literal names: whoever
    hands them to DuckDB escapes them (:func:`millpond.io.sqltext.literal_path`).
    """
    found: list[FileInfo] = []
    refreshed: set[int] = set()
    for pattern in as_path_list(paths):
        fs = filesystem_for(pattern, storage_options)
        if is_local(pattern):
            entries = _resolve_one(fs, pattern, extensions, recursive, glob)
        else:  # a denied or unreachable store: one clear error naming the URL
            if id(fs) not in refreshed:  # what other writers did since this process looked
                fs.invalidate_cache()  # once per store, not once per path of a long list
                refreshed.add(id(fs))
            entries = with_retries(
                lambda fs=fs, pattern=pattern: _resolve_one(
                    fs, pattern, extensions, recursive, glob
                ),
                f"listing {pattern!r}",
            )
        for path, info in entries:
            found.append(FileInfo(_with_protocol(path, pattern), int(info.get("size") or 0)))
    return found


def _resolve_one(fs, pattern: str, extensions: tuple[str, ...], recursive: bool, glob: bool):
    stripped = fs._strip_protocol(pattern)
    is_glob = glob and any(ch in pattern for ch in _GLOB_CHARS)
    entries = []
    if is_glob:
        matches = fs.glob(stripped, detail=True)
        entries = [(p, info) for p, info in sorted(matches.items()) if info["type"] != "directory"]
    is_dir = not entries and fs.isdir(stripped)
    if is_dir:
        entries = _committed(fs, stripped, _list_dir(fs, stripped, extensions, recursive))
    elif not entries and fs.exists(stripped):
        entries = [(stripped, fs.info(stripped))]
    if not entries:
        what = "directory has no matching files" if is_dir else "no such file"
        if is_glob:
            what = "the glob matched no files"
        raise InputNotFoundError(f"input {pattern!r}: {what}")
    return entries


def _committed(fs, root: str, entries: list) -> list:
    """The entries of a dataset folder a reader may see: those its millpond manifest
    lists, if it has one; never the files of a write that has not committed."""
    manifest, pending = committed_filter(fs, root)
    if manifest is None:
        return [e for e in entries if not written_by(e[0], pending)] if pending else entries
    listed = {posixpath.join(root.rstrip("/"), f) for f in manifest.files}
    kept = [e for e in entries if e[0] in listed]
    missing = listed - {e[0] for e in kept}
    if missing:
        raise InputNotFoundError(
            f"dataset {root!r}: its manifest lists {sorted(missing)[0]!r}, which is missing "
            f"({len(missing)} listed files are)"
        )
    return kept


def _list_dir(fs, root: str, extensions: tuple[str, ...], recursive: bool):
    maxdepth = None if recursive else 1
    entries = fs.find(root, maxdepth=maxdepth, detail=True, withdirs=False)
    if not recursive and not entries:
        entries = {}
    if not recursive:
        # hive-partitioned datasets keep files in key=value subdirectories
        subdirs = [
            p
            for p, i in fs.find(root, maxdepth=1, withdirs=True, detail=True).items()
            if i["type"] == "directory" and p.rstrip("/") != root.rstrip("/")  # find lists root
        ]
        if subdirs and all("=" in os.path.basename(d.rstrip("/")) for d in subdirs):
            entries = fs.find(root, detail=True, withdirs=False)
    result = []
    for path, info in sorted(entries.items()):
        name = os.path.basename(path)
        if name.startswith((".", "_")):
            continue
        if extensions and not name.lower().endswith(extensions):
            continue
        result.append((path, info))
    return result


def partition_files(
    files: list[FileInfo], num_partitions: int | None, target_bytes: int
) -> list[list[FileInfo]]:
    """Group files into partitions: ``num_partitions`` groups of near-equal size if given,
    else consecutive groups of about ``target_bytes`` (one file is never split here)."""
    if not files:
        return []
    if num_partitions is None:
        total = sum(f.size for f in files)
        num_partitions = max(1, min(len(files), -(-total // max(1, target_bytes))))
        if all(f.size >= target_bytes // 4 for f in files):
            num_partitions = len(files)
    num_partitions = max(1, num_partitions)
    if num_partitions >= len(files):
        groups = [[f] for f in files]
        return groups + [[] for _ in range(num_partitions - len(files))]
    # contiguous split balancing bytes (keeps file order, so partition order is stable)
    total = sum(max(1, f.size) for f in files)
    groups: list[list[FileInfo]] = [[] for _ in range(num_partitions)]
    acc, prev = 0, -1
    for index, f in enumerate(files):
        remaining_files = len(files) - index
        # by the file's midpoint, so near-equal files split evenly (4 files into 2: 2 + 2),
        # never skipping a partition
        slot = min(num_partitions - 1, (2 * acc + max(1, f.size)) * num_partitions // (2 * total))
        slot = min(slot, prev + 1)
        # never leave later partitions without a file when files remain to fill them
        slot = max(slot, num_partitions - remaining_files)
        groups[slot].append(f)
        prev = slot
        acc += max(1, f.size)
    return groups
