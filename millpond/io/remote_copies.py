"""Remote files a task reads whole, fetched whole first: DuckDB reads an ``s3://`` file
through fsspec in many small ranged requests (28 MB/s from the test server, which serves
one whole object at ~200 MB/s), so a task that will read every byte of its files anyway
gets them with one GET each, several at a time, into its scratch space."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

from millpond.io.object_commit import download
from millpond.io.storage import Storage, is_local, split_protocol

#: files of one task fetched at a time
FETCH_CONCURRENCY = 8
#: formats whose scans read each file whole (a Parquet scan with a projection does not)
WHOLE_FILE_FORMATS = ("parquet", "csv", "json", "files", "text")


def worth_fetching(
    fmt_name: str, options, storage: Storage | None, files: list[str], columns, ranged: bool
) -> bool:
    """Whether a scan reads every byte of its remote files: whole-file formats, no row
    ranges (those read a part), no projection of a Parquet file (it reads a part of each
    row group), no ``filename`` column (it would name the local copy), and no
    ``cache_dir`` (whose copies are local already)."""
    if not files or all(is_local(f) for f in files) or ranged:
        return False
    if storage is not None and storage.cache_dir:
        return False
    if fmt_name not in WHOLE_FILE_FORMATS or options.get("filename"):
        return False
    if len({split_protocol(f)[0] for f in files}) > 1:
        return False
    if fmt_name == "files":  # only a step that reads the bytes needs the files
        return columns is None or "bytes" in columns
    return not (fmt_name == "parquet" and columns is not None)


def fetch_whole(
    files: list[str], storage: Storage | None, scratch: str
) -> tuple[str, dict[str, str]]:
    """Download each remote file of ``files`` under a new folder of ``scratch``, keeping its
    path (so ``key=value`` folders still say their keys); returns that folder (for the
    caller to remove) and URL → local path."""
    storage = storage or Storage()
    root = os.path.join(scratch, f"fetched-{uuid.uuid4().hex[:12]}")
    copies = {}
    for url in files:
        if not is_local(url):
            protocol, rest = split_protocol(url)
            copies[url] = os.path.join(root, protocol or "remote", rest.lstrip("/"))
    for local in copies.values():
        os.makedirs(os.path.dirname(local), exist_ok=True)

    def get(item: tuple[str, str]) -> None:
        url, local = item
        download(storage.filesystem(url), url, local)

    workers = max(1, min(FETCH_CONCURRENCY, len(copies)))
    with ThreadPoolExecutor(workers, thread_name_prefix="millpond-fetch") as pool:
        list(pool.map(get, copies.items()))
    return root, copies


def url_prefix_of(root: str, url: str) -> tuple[str, str]:
    """The local folder prefix under ``root`` standing for ``url``'s protocol, and the URL
    prefix it stands for: ``(root/s3/, "s3://")``."""
    protocol = split_protocol(url)[0] or "remote"
    return os.path.join(root, protocol) + "/", f"{protocol}://"
