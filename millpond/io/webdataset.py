"""WebDataset shards: tar files whose members are grouped into samples by key, read and
written with Python's :mod:`tarfile` (shards opened through fsspec for URLs).

The rules are webdataset's own, so shards move between the two unchanged: a member's key
is its name up to the first dot of its base name and its extension the rest
(``a/b.seg.png`` is key ``a/b``, extension ``seg.png``); consecutive members with one key
form a sample; names without a dot, directories and ``__meta__`` members are skipped;
extensions are lower-cased. A sample becomes a row: ``__key__``, ``__url__`` (the shard)
and one column per extension, decoded by the extension's last part as webdataset's basic
decoders do: ``txt``/``text``/``transcript`` as strings, ``cls``/``cls2``/``index``/
``inx``/``id`` as integers, ``json``/``jsn`` as the JSON *text* (a string column: shapes
differ from sample to sample, and DuckDB's ``json_extract`` or ``json.loads`` parse it
where wanted); everything else stays bytes."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import re
import tarfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa

from millpond.errors import InputReadError
from millpond.io.filesystem import filesystem_for, is_local

KEY = "__key__"
URL = "__url__"
TEXT_EXTENSIONS = frozenset({"txt", "text", "transcript"})
INT_EXTENSIONS = frozenset({"cls", "cls2", "index", "inx", "id"})
JSON_EXTENSIONS = frozenset({"json", "jsn"})
#: webdataset skips these members (``__index__`` and other metadata)
_META = re.compile(r"__[^/]*__($|/)")
_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
#: a batch of samples holds at most this many payload bytes (images are large)
BATCH_BYTES = 64 * 1024 * 1024
DEFAULT_MAXCOUNT = 100_000
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


# -- names and types --------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a member name, or None for a member webdataset skips."""
    if _META.match(name) or ("/" not in name and name.startswith("__") and name.endswith("__")):
        return None
    match = _NAME.match(name)
    if not match:
        return None
    return match.group(1), match.group(2).lower()


def _kind(extension: str) -> str:
    last = extension.rsplit(".", 1)[-1]
    if last in TEXT_EXTENSIONS or last in JSON_EXTENSIONS:
        return "text"
    if last in INT_EXTENSIONS:
        return "int"
    return "bytes"


def column_type(extension: str) -> pa.DataType:
    """The Arrow type of an extension's column."""
    return {"text": pa.large_string(), "int": pa.int64()}.get(_kind(extension), pa.large_binary())


def sample_schema(extensions: Iterable[str]) -> pa.Schema:
    """``__key__``, ``__url__`` and the extensions' columns, in sorted order (the same in
    every task whatever order its shards list them in)."""
    fields = [pa.field(KEY, pa.large_string()), pa.field(URL, pa.large_string())]
    fields += [pa.field(ext, column_type(ext)) for ext in sorted(set(extensions))]
    return pa.schema(fields)


def normalize_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    """User-given extensions as columns: lower case, no leading dot."""
    if isinstance(extensions, str):
        extensions = [extensions]
    out = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.strip("."):
            raise ValueError(f"extensions must be non-empty strings, got {ext!r}")
        out.append(ext.lower().lstrip("."))
    return tuple(dict.fromkeys(out))


def _decode(extension: str, data: bytes, path: str, member: str) -> Any:
    kind = _kind(extension)
    if kind == "bytes":
        return data
    try:
        text = data.decode("utf-8")
        return int(text.strip()) if kind == "int" else text
    except ValueError as exc:  # UnicodeDecodeError too
        raise InputReadError(
            f"cannot read WebDataset shard {path!r}: member {member!r} is not "
            f"{'an integer' if kind == 'int' else 'UTF-8 text'} ({exc})"
        ) from None


# -- reading ------------------------------------------------------------------------------


class _Broken(tarfile.ReadError):
    """A header that is neither a member nor the end of the archive."""


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile stops without a word at a truncated or garbled header after the first
    member (it takes it for the end of the archive); a shard cut short must fail instead."""

    @classmethod
    def fromtarfile(cls, tarfile_):  # type: ignore[override]
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError) as exc:
            raise _Broken(f"truncated: {exc} at byte {tarfile_.offset}") from None
        except tarfile.InvalidHeaderError as exc:
            raise _Broken(f"corrupt: {exc} at byte {tarfile_.offset}") from None


def open_binary(path: str, storage: Any = None) -> BinaryIO:
    """A local path, or an fsspec URL (reached with ``storage``, the scan's options)
    opened for reading bytes."""
    if is_local(path):
        return open(path.removeprefix("file://"), "rb")
    return filesystem_for(path, storage).open(path, "rb")


def _shard_error(path: str, exc: BaseException) -> InputReadError:
    return InputReadError(
        f"cannot read WebDataset shard {path!r}: {exc} (a truncated or corrupt tar file?)"
    )


#: a member of a shard: its key, extension, name, and how to read its bytes (None: not
#: kept); the bytes are read before the next member is asked for
_Entry = tuple[str, str, str, Callable[[], bytes] | None]


def list_members(path: str, storage: Any = None) -> list[tuple[str, str, tarfile.TarInfo]]:
    """The ``(key, extension, header)`` of a shard's sample members, from their headers
    alone: the members' data is skipped by seeking, and the headers are parsed once, for
    :func:`iter_samples` to read the data by them."""
    try:
        with (
            open_binary(path, storage) as raw,
            tarfile.open(fileobj=raw, mode="r:*", tarinfo=_StrictTarInfo) as tar,
        ):
            found = []
            for member in tar:
                tar.members = []  # kept here, not twice
                split = split_name(member.name) if member.isreg() else None
                if split is not None:
                    found.append((split[0], split[1], member))
            return found
    except _TAR_ERRORS as exc:
        raise _shard_error(path, exc) from None


def _listed(tar: tarfile.TarFile, members: list) -> Iterator[_Entry]:
    for key, ext, info in members:
        yield key, ext, info.name, lambda info=info: _read_member(tar, info)


def _streamed(tar: tarfile.TarFile, wanted: frozenset[str] | None) -> Iterator[_Entry]:
    for member in tar:
        tar.members = []  # the stream keeps no list of what it read
        split = split_name(member.name) if member.isreg() else None
        if split is None:
            continue
        keep = wanted is None or split[1] in wanted
        yield (
            split[0],
            split[1],
            member.name,
            (lambda m=member: _read_member(tar, m)) if keep else None,
        )


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(info)
    return handle.read() if handle is not None else b""


def iter_samples(
    path: str,
    wanted: frozenset[str] | None = None,
    storage: Any = None,
    members: list[tuple[str, str, tarfile.TarInfo]] | None = None,
) -> Iterator[dict[str, Any]]:
    """The samples of one shard, in order: dicts of ``__key__``, ``__url__`` and the
    decoded value of each extension (only ``wanted`` ones when given). With ``members``
    (the shard's :func:`list_members`) the data is read by seeking to it; without, the
    shard is streamed, each header parsed and each member read once."""
    mode = "r:*" if members is not None else "r|*"
    try:
        with (
            open_binary(path, storage) as raw,
            tarfile.open(fileobj=raw, mode=mode, tarinfo=_StrictTarInfo) as tar,
        ):
            entries = _listed(tar, members) if members is not None else _streamed(tar, wanted)
            current: dict[str, Any] | None = None
            for key, ext, name, read in entries:
                if current is None or current[KEY] != key:
                    if current is not None:
                        yield current
                    current = {KEY: key, URL: path}
                if ext in current:
                    raise InputReadError(
                        f"cannot read WebDataset shard {path!r}: member {name!r} repeats "
                        f"extension {ext!r} of sample {key!r}"
                    )
                # a member not kept is still marked seen: a repeat of it is an error too
                current[ext] = None if read is None else _decode(ext, read(), path, name)
            if current is not None:
                yield current
    except _TAR_ERRORS as exc:
        raise _shard_error(path, exc) from None


@dataclass(frozen=True)
class WebDatasetSource:
    """What a task of ``read_webdataset`` reads: its shards' samples as rows. Without
    ``extensions`` the task first lists its shards' members (headers only, parsed once)
    so every batch has the columns of every extension its shards hold, then reads the
    data by that listing; with them, each shard is streamed once, keeping those only."""

    extensions: tuple[str, ...] | None = None
    #: a shard to take the columns from when a task has none (an empty partition)
    fallback: str | None = None
    #: how remote shards are reached (the scan's storage options)
    storage: Any = None

    def read(self, rows: list[dict], batch_size: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The task's columns (``extensions``, else those its shards' members have) and
        the samples of the shards ``rows`` name, in order, as batches of at most
        ``batch_size`` rows and about :data:`BATCH_BYTES` of payload."""
        paths = [r["path"] for r in rows if r.get("path")]
        if self.extensions is not None:
            schema = sample_schema(self.extensions)
            return schema, self._batches([(p, None) for p in paths], schema, batch_size)
        listed = [(p, list_members(p, self.storage)) for p in paths]
        if not paths and self.fallback:
            listed_columns = list_members(self.fallback, self.storage)
        else:
            listed_columns = [m for _p, members in listed for m in members]
        schema = sample_schema(ext for _key, ext, _info in listed_columns)
        return schema, self._batches(listed, schema, batch_size)

    def _batches(
        self, shards: list, schema: pa.Schema, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        wanted = frozenset(self.extensions) if self.extensions is not None else None
        pending: list[dict] = []
        nbytes = 0
        for path, members in shards:
            for sample in iter_samples(path, wanted, self.storage, members):
                pending.append(sample)
                nbytes += sum(len(v) for v in sample.values() if isinstance(v, (bytes, str)))
                if len(pending) >= batch_size or nbytes >= BATCH_BYTES:
                    yield _batch(pending, schema)
                    pending, nbytes = [], 0
        if pending:
            yield _batch(pending, schema)


def _batch(samples: list[dict], schema: pa.Schema) -> pa.RecordBatch:
    arrays = [pa.array([s.get(field.name) for s in samples], type=field.type) for field in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def expand_braces(pattern: str) -> list[str]:
    """webdataset's shard notation: ``shard-{000..009}.tar`` (zero-padded as written) and
    ``{train,val}``; several groups multiply. A pattern without braces is itself."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        lo, hi = span.group(1), span.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        step = 1 if int(hi) >= int(lo) else -1
        choices = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:  # not a brace group of webdataset's: a literal brace
        return [head + "{" + p for p in expand_braces(body + "}" + tail)]
    return [p for choice in choices for p in expand_braces(head + choice + tail)]


# -- writing ------------------------------------------------------------------------------


def _encode(extension: str, value: Any) -> bytes:
    """A column's value as a member's bytes: bytes as they are, text as UTF-8, dicts and
    lists (and anything for a ``.json`` member that is not already its text) as JSON,
    numbers as their decimal text (what webdataset's ``cls`` encoder writes)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (dict, list, tuple)) or extension.rsplit(".", 1)[-1] in JSON_EXTENSIONS:
        return json.dumps(value, default=str).encode("utf-8")
    if isinstance(value, bool):
        return str(int(value)).encode("ascii")
    return str(value).encode("utf-8")


def _member_columns(names: Sequence[str]) -> list[str]:
    """The columns that become members: all but ``__key__``, ``__url__`` and other names
    starting with ``_`` (webdataset's metadata, which its writer skips too)."""
    columns = [n for n in names if not n.startswith("_")]
    for name in columns:
        if "/" in name or not name.strip("."):
            raise ValueError(
                f"write_webdataset: column {name!r} cannot name a tar member's extension"
            )
    return sorted(columns)


def _check_key(key: str) -> str:
    base = key.rsplit("/", 1)[-1]
    if not base or "." in base or key.startswith("/"):
        raise ValueError(
            f"write_webdataset: __key__ {key!r} cannot be read back as a key (a key's "
            "last part must be non-empty and hold no '.'; readers split names at the first dot)"
        )
    return key


class ShardWriter:
    """Rows into tar shards ``<basename>-00000.tar``, ``-00001``… in ``directory``, a new
    shard after ``maxcount`` samples or ``maxsize`` bytes. Rows without a ``__key__``
    get ``<basename>-<row number>``, unique to the write."""

    def __init__(self, directory: str, basename: str, maxcount: int, maxsize: int) -> None:
        self.directory = directory
        self.basename = basename
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.files: list[str] = []
        self.rows = 0
        self._raw: BinaryIO | None = None
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self._size = 0
        self._mtime = int(time.time())

    def _next_shard(self) -> None:
        self._close_shard()
        path = os.path.join(self.directory, f"{self.basename}-{len(self.files):05d}.tar")
        self._raw = open(path, "wb")
        self._tar = tarfile.open(fileobj=self._raw, mode="w", format=tarfile.PAX_FORMAT)
        self.files.append(path)
        self._count = self._size = 0

    def _close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """Add a batch's rows as samples, starting new shards as the limits say."""
        columns = _member_columns(batch.schema.names)
        has_key = KEY in batch.schema.names
        for row in batch.to_pylist():
            key = row.get(KEY) if has_key else None
            if isinstance(key, bytes):
                key = key.decode("utf-8")
            if key is None or key == "":
                key = f"{self.basename}-{self.rows:09d}"
            key = _check_key(str(key))
            members = [(ext, _encode(ext, row[ext])) for ext in columns if row[ext] is not None]
            size = sum(512 + len(data) for _ext, data in members)
            if (
                self._tar is None
                or self._count >= self.maxcount
                or (self._count and self._size + size > self.maxsize)
            ):
                self._next_shard()
            assert self._tar is not None
            for ext, data in members:
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = self._mtime
                info.mode = 0o644
                self._tar.addfile(info, io.BytesIO(data))
            self._count += 1
            self._size += size
            self.rows += 1

    def close(self) -> list[str]:
        """Finish the last shard; one shard alone is named ``<basename>.tar``. Returns the
        shards' paths."""
        self._close_shard()
        if len(self.files) == 1:
            only = os.path.join(self.directory, f"{self.basename}.tar")
            os.replace(self.files[0], only)
            self.files = [only]
        return self.files


def write_shards(
    batches: Iterable[pa.RecordBatch],
    directory: str,
    basename: str,
    maxcount: int = DEFAULT_MAXCOUNT,
    maxsize: int = 1 << 62,
) -> tuple[int, list[str]]:
    """Write ``batches`` as WebDataset shards; returns the rows and the shards written
    (none for no rows)."""
    writer = ShardWriter(directory, basename, maxcount, maxsize)
    try:
        for batch in batches:
            writer.write_batch(batch)
    finally:
        files = writer.close()
    return writer.rows, files
