"""Datasets committed by manifest, for stores without an atomic rename (S3, GCS…).

A write puts its data files under names no other write uses (``part-<write_id>-…``),
announced first by a *pending* marker (``_millpond_write-<write_id>.json``), and commits
by one PUT of ``_millpond_manifest.json`` listing the dataset's files (an object PUT is
atomic: readers see the old manifest or the new one). Readers of a folder that holds a
manifest read exactly the files it lists; in a folder with pending markers and no
manifest, the files of those unfinished writes are not read. So a write that failed,
or whose server went away halfway, leaves nothing a millpond reader would see."""

from __future__ import annotations

import json
import posixpath
import re
import socket
import time
from dataclasses import dataclass

MANIFEST_NAME = "_millpond_manifest.json"
SUCCESS_NAME = "_SUCCESS"
PENDING_PREFIX = "_millpond_write-"
PENDING_SUFFIX = ".json"
_WRITE_ID = re.compile(r"^_millpond_write-(?P<id>[0-9A-Za-z-]+)\.json$")


@dataclass(frozen=True)
class Manifest:
    """The committed state of a dataset: its files, relative to the dataset's folder."""

    files: tuple[str, ...]
    write_id: str = ""
    committed_at: float = 0.0

    def to_json(self) -> bytes:
        body = {
            "format": "millpond-manifest",
            "version": 1,
            "write_id": self.write_id,
            "committed_at": self.committed_at,
            "files": list(self.files),
        }
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            body = json.loads(data)
            files = tuple(str(f) for f in body["files"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{where} is not a millpond manifest ({exc})") from exc
        for name in files:
            if name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"{where} lists {name!r}, a file outside its dataset")
        return cls(files, str(body.get("write_id", "")), float(body.get("committed_at", 0)))


def pending_name(write_id: str) -> str:
    return f"{PENDING_PREFIX}{write_id}{PENDING_SUFFIX}"


def pending_record(write_id: str) -> bytes:
    """What a pending marker holds: who writes, since when (to clean up after the dead)."""
    import os

    record = {"write_id": write_id, "host": socket.gethostname(), "pid": os.getpid()}
    record["started_at"] = time.time()
    return json.dumps(record).encode()


def pending_write_ids(names: list[str]) -> set[str]:
    """The write ids of the pending markers among a folder's entry names."""
    ids = set()
    for name in names:
        match = _WRITE_ID.match(posixpath.basename(name))
        if match:
            ids.add(match.group("id"))
    return ids


def written_by(name: str, write_ids: set[str]) -> bool:
    """Whether a data file's name says one of ``write_ids`` wrote it."""
    base = posixpath.basename(name)
    return any(base.startswith(f"part-{w}-") for w in write_ids)


def committed_filter(fs, root: str) -> tuple[Manifest | None, set[str]]:
    """What a reader of folder ``root`` may read: its manifest (None if it has none) and
    the write ids of unfinished writes whose files must be skipped."""
    try:
        names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]
    except (FileNotFoundError, NotADirectoryError):
        return None, set()
    pending = pending_write_ids(names)
    if MANIFEST_NAME not in names:
        return None, pending
    path = posixpath.join(root.rstrip("/"), MANIFEST_NAME)
    return Manifest.from_json(fs.cat_file(path), path), pending
