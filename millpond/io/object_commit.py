"""Writing a dataset to an object store, where nothing can be renamed: the tasks upload
data files under names of this write's own, and the driver commits by manifest (see
:mod:`millpond.io.manifest`). ``overwrite`` swaps the manifest, then deletes the files of
the old one; ``append`` lists the old files and the new; a write that fails deletes what
it uploaded, and what it could not delete no millpond reader sees."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable

from millpond.errors import OutputExistsError, PlanError, UnsafePathError
from millpond.io.manifest import (
    MANIFEST_NAME,
    SUCCESS_NAME,
    Manifest,
    pending_name,
    pending_record,
    pending_write_ids,
    written_by,
)
from millpond.io.safety import TASK_FOLDER_PREFIX, is_data_file, remove_objects
from millpond.io.storage import Storage, split_protocol, with_retries

#: a pending marker of another machine's writer is stale once it is this old (seconds)
PENDING_STALE_AFTER_S = 24 * 3600.0


class ObjectStoreDataset:
    """One dataset folder (``s3://bucket/path``) of an object store, for one write."""

    def __init__(self, url: str, storage: Storage) -> None:
        protocol, rest = split_protocol(url)
        self.url = f"{protocol}://{rest.strip('/')}"
        self.protocol = protocol
        self.fs = storage.filesystem(self.url, cached=False)
        self.root = self.fs._strip_protocol(self.url).rstrip("/")
        if "/" not in self.root:
            # a bucket is what "/" is on a disk: never a dataset millpond replaces or fills
            raise UnsafePathError(
                f"refusing to write to {self.url!r}: it is a whole bucket; write to a "
                "folder in it (s3://bucket/dataset)"
            )

    # -- what is there ----------------------------------------------------------------
    def url_of(self, relative: str) -> str:
        return f"{self.protocol}://{self.root}/{relative}"

    def _listing(self) -> dict[str, dict]:
        """Every object below the folder, by path relative to it (fresh, not cached)."""

        def find() -> dict[str, dict]:
            self.fs.invalidate_cache(self.root)
            found = self.fs.find(self.root, detail=True, withdirs=False)
            return {p[len(self.root) + 1 :]: info for p, info in found.items() if p != self.root}

        return with_retries(find, f"listing {self.url!r}")

    def manifest(self) -> Manifest | None:
        path = f"{self.root}/{MANIFEST_NAME}"

        def read() -> Manifest | None:
            try:
                return Manifest.from_json(self.fs.cat_file(path), self.url_of(MANIFEST_NAME))
            except FileNotFoundError:
                return None

        return with_retries(read, f"reading {self.url_of(MANIFEST_NAME)!r}")

    def committed_files(self, listing: dict[str, dict]) -> list[str]:
        """The files a reader sees now: the manifest's, or (a folder another tool wrote)
        every data file but those of unfinished millpond writes."""
        manifest = self.manifest()
        if manifest is not None:
            return list(manifest.files)
        pending = pending_write_ids(list(listing))
        return [
            name
            for name in listing
            if not _hidden(name) and not (pending and written_by(name, pending))
        ]

    # -- the write's life cycle ---------------------------------------------------
    def check(self, mode: str, inputs: Iterable[str]) -> bool:
        """Validate ``mode`` against what the folder holds; False: nothing to write."""
        listing = self._listing()
        committed = self.committed_files(listing)
        if not committed:
            return True
        if mode == "error":
            raise OutputExistsError(
                f"output path {self.url!r} already exists; pass mode='overwrite' to replace "
                "it or mode='append' to add to it"
            )
        if mode == "ignore":
            return False
        if mode == "overwrite":
            self.check_replaceable(listing, inputs)
        return True

    def check_replaceable(self, listing: dict[str, dict], inputs: Iterable[str]) -> None:
        for item in inputs:
            if item.rstrip("/") == self.url or item.startswith(self.url + "/"):
                raise UnsafePathError(
                    f"refusing to overwrite {self.url!r}: it holds {item!r}, an input of this job"
                )
        for name in sorted(listing):
            folders, base = name.split("/")[:-1], name.rsplit("/", 1)[-1]
            if not is_data_file(base) or not all(
                "=" in f or f.startswith(TASK_FOLDER_PREFIX) for f in folders
            ):
                raise UnsafePathError(
                    f"refusing to overwrite {self.url!r}: it is not a dataset — it holds "
                    f"{self.url_of(name)!r}, which is not a data file millpond writes or one "
                    "of their markers; remove it yourself or write somewhere else"
                )

    def prepare(self, write_id: str) -> None:
        """Announce the write (its pending marker) and clear what dead writers left."""
        self.remove_stale()
        marker = f"{self.root}/{pending_name(write_id)}"
        with_retries(
            lambda: self.fs.pipe_file(marker, pending_record(write_id)),
            f"writing {self.url_of(pending_name(write_id))!r}",
        )

    def remove_stale(self) -> None:
        """Delete the files and markers of earlier writes to this folder whose writer died
        (a process of this machine that is gone, or a marker older than a day)."""
        try:
            listing = self._listing()
        except OSError:
            return
        for write_id in pending_write_ids(list(listing)):
            marker = pending_name(write_id)
            if not self._writer_dead(marker):
                continue
            names = [n for n in listing if written_by(n, {write_id})]
            remove_objects(self.fs, self.url, names + [marker])

    def _writer_dead(self, marker: str) -> bool:
        from millpond.io.commit import writer_alive

        try:
            record = json.loads(self.fs.cat_file(f"{self.root}/{marker}"))
        except (OSError, ValueError):
            return False
        if record.get("host") == socket.gethostname():
            return not writer_alive(record)
        return time.time() - float(record.get("started_at", 0)) > PENDING_STALE_AFTER_S

    def commit(
        self, write_id: str, written: list[str], mode: str, inputs: Iterable[str]
    ) -> list[str]:
        """Make the write's ``written`` files (URLs) the dataset, by manifest; returns the
        dataset's files (URLs) now. ``mode`` is checked again: another writer may have
        committed while this job ran."""
        listing = self._listing()
        ours = sorted(self._relative(url) for url in written)
        missing = [name for name in ours if name not in listing]
        if missing:
            raise OSError(
                f"committing {self.url!r}: uploaded file {self.url_of(missing[0])!r} is missing"
            )
        before = self.committed_files(listing)
        if before and mode == "error":
            raise OutputExistsError(
                f"output path {self.url!r} was created by another writer while this job ran; "
                "this job's output was discarded and nothing at the path was changed"
            )
        if before and mode == "ignore":
            self.abort(write_id, written)
            return []
        if mode == "overwrite" and before:
            self.check_replaceable(
                {n: i for n, i in listing.items() if not written_by(n, {write_id})}, inputs
            )
        files = (before + ours) if mode == "append" else ours
        manifest = Manifest(tuple(files), write_id, time.time())
        self._put(MANIFEST_NAME, manifest.to_json())  # the commit: one atomic PUT
        self._put(SUCCESS_NAME, b"")
        stale = [
            n
            for n in listing
            if n not in manifest.files
            and (written_by(n, {write_id}) or (mode == "overwrite" and n in before))
        ]
        remove_objects(self.fs, self.url, stale + [pending_name(write_id)])
        return [self.url_of(name) for name in files]

    def abort(self, write_id: str, written: Iterable[str] = ()) -> None:
        """Delete what this write uploaded (its files, named by ``write_id``) and its
        marker; never raises (a store that is gone keeps them, invisible to readers)."""
        try:
            names = [n for n in self._listing() if written_by(n, {write_id})]
        except OSError:
            names = [self._relative(url) for url in written]
        try:
            remove_objects(self.fs, self.url, names + [pending_name(write_id)])
        except OSError:
            pass

    # -- helpers ------------------------------------------------------------------
    def _relative(self, url: str) -> str:
        path = self.fs._strip_protocol(url)
        if not path.startswith(self.root + "/"):
            raise PlanError(f"{url!r} is not inside the output {self.url!r}")
        return path[len(self.root) + 1 :]

    def _put(self, name: str, data: bytes) -> None:
        with_retries(
            lambda: self.fs.pipe_file(f"{self.root}/{name}", data), f"writing {self.url_of(name)!r}"
        )


def _hidden(name: str) -> bool:
    """A marker or a file in a hidden folder (manifests, pending markers, ``_SUCCESS``)."""
    return any(part.startswith((".", "_")) for part in name.split("/"))


def upload(fs, local_path: str, url: str) -> None:
    """Copy one local file to ``url``, retried while the store fails transiently; the error
    that ends it names the URL."""
    with_retries(lambda: fs.put_file(local_path, url), f"uploading {url!r}")


def download(fs, url: str, local_path: str) -> None:
    """Copy ``url`` to a local file with one GET, retried while the store fails
    transiently; the error that ends it names the URL."""
    with_retries(lambda: fs.get_file(url, local_path), f"downloading {url!r}")
