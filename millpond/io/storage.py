"""Where remote data is reached with which options: fsspec filesystems built from
``storage_options`` (per call, or session-wide), credentials kept out of every text a
user or a log sees, and retries of the object-store calls that may succeed if repeated.

Credentials travel with the plan (a worker or a Ray task must open the same bucket), but
a :class:`Storage` never prints them: its ``repr`` names only the option keys, and every
secret value it was given is registered so that :func:`redact` can strip it from an error,
a log line or a job report, as it does the standard credential environment variables."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from millpond.errors import MillpondError

if TYPE_CHECKING:
    import fsspec

T = TypeVar("T")

LOCAL_PROTOCOLS = (None, "file", "local")

#: option names whose values are credentials (matched as parts of the name)
_SECRET_PARTS = ("secret", "token", "password", "passwd", "credential", "sas", "key")
#: environment variables holding credentials, by the libraries fsspec uses
SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "HF_TOKEN",
)
REDACTED = "***"
_MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_PARTS)


def _collect_secrets(options: Mapping[str, Any], into: set[str]) -> None:
    for name, value in options.items():
        if isinstance(value, Mapping):
            _collect_secrets(value, into)
        elif isinstance(value, str) and _is_secret_name(str(name)):
            into.add(value)


def register_secrets(options: Mapping[str, Any]) -> None:
    """Remember the credential values in ``options`` so :func:`redact` hides them."""
    found: set[str] = set()
    _collect_secrets(options, found)
    with _secrets_lock:
        _secrets.update(s for s in found if len(s) >= _MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with every known credential replaced by ``***``: the values given in any
    ``storage_options`` of this process and those of the standard credential variables."""
    if not text:
        return text
    with _secrets_lock:
        secrets = set(_secrets)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= _MIN_SECRET_LENGTH:
            secrets.add(value)
    for secret in sorted(secrets, key=len, reverse=True):  # a secret inside another
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that strips credentials from every record of millpond's loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_redacting_filter = RedactingFilter()


def install_log_redaction() -> None:
    """Give every ``millpond`` logger the credential filter (a logger's filters are not
    inherited by its children, so each gets it)."""
    names = [n for n in list(logging.Logger.manager.loggerDict) if n.split(".")[0] == "millpond"]
    for name in ["millpond", *names]:
        logger = logging.getLogger(name)
        if _redacting_filter not in logger.filters:
            logger.addFilter(_redacting_filter)


def split_protocol(path: str) -> tuple[str | None, str]:
    """``s3://bucket/key`` → ``("s3", "bucket/key")``; a plain path has no protocol."""
    from fsspec.core import split_protocol as split

    return split(path)


def is_local(path: str) -> bool:
    """A path of this machine's filesystem (plain, ``file://`` or a POSIX mount)."""
    return split_protocol(path)[0] in LOCAL_PROTOCOLS


@dataclass(frozen=True)
class Storage:
    """fsspec options for remote paths: ``options`` apply to every remote protocol,
    ``per_protocol`` (``{"s3": {...}, "gs": {...}}``) to one; ``cache_dir`` keeps a local
    copy of every remote file read (fsspec's ``filecache``) for data read more than once.
    Its ``repr`` shows option names only: a plan, an explain() or a report that prints it
    never shows a credential."""

    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    per_protocol: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        register_secrets(self.options)
        for options in self.per_protocol.values():
            register_secrets(options)

    def __setstate__(self, state: dict) -> None:
        """Unpickled in a worker: its secrets are that process's to hide as well."""
        self.__dict__.update(state)
        self.__post_init__()

    @classmethod
    def of(cls, storage_options: Mapping[str, Any] | Storage | None, **kw: Any) -> Storage:
        """A Storage from what a user passed: flat fsspec options, or options keyed by
        protocol (every key a protocol name fsspec knows), or a Storage already."""
        if isinstance(storage_options, Storage):
            return storage_options
        if not storage_options:
            return cls(**kw)
        if not isinstance(storage_options, Mapping):
            raise TypeError(f"storage_options must be a dict, got {type(storage_options).__name__}")
        from fsspec.registry import known_implementations

        if all(
            k in known_implementations and isinstance(v, Mapping)
            for k, v in storage_options.items()
        ):
            return cls(per_protocol=dict(storage_options), **kw)
        return cls(options=dict(storage_options), **kw)

    def merged(self, storage_options: Mapping[str, Any] | Storage | None) -> Storage:
        """This session-wide Storage with a call's own options on top."""
        if storage_options is None:
            return self
        call = Storage.of(storage_options)
        per = {k: dict(v) for k, v in self.per_protocol.items()}
        for protocol, options in call.per_protocol.items():
            per[protocol] = {**per.get(protocol, {}), **options}
        return Storage({**self.options, **call.options}, per, call.cache_dir or self.cache_dir)

    def options_for(self, protocol: str) -> dict[str, Any]:
        """The fsspec options for one protocol (``s3a`` is ``s3``)."""
        protocol = {"s3a": "s3", "gcs": "gs"}.get(protocol, protocol)
        return {**self.options, **self.per_protocol.get(protocol, {})}

    def __repr__(self) -> str:
        names = sorted(self.options) + [
            f"{p}.{k}" for p, opts in sorted(self.per_protocol.items()) for k in sorted(opts)
        ]
        cache = f", cache_dir={self.cache_dir!r}" if self.cache_dir else ""
        return f"Storage(options: {', '.join(names) or 'none'}{cache})"

    def filesystem(self, path: str, cached: bool = True) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem serving ``path`` with these options (a local copy of what
        it reads under ``cache_dir`` when set and ``cached``)."""
        import fsspec

        protocol = split_protocol(path)[0]
        if protocol in LOCAL_PROTOCOLS:
            return fsspec.filesystem("file")
        options = self.options_for(protocol)
        if self.cache_dir and cached:
            return cached_filesystem(protocol, options, self.cache_dir)
        return fsspec.filesystem(protocol, **options)


_cache_classes: dict[tuple[str, ...], type] = {}


def cached_filesystem(protocol: str, options: Mapping[str, Any], cache_dir: str):
    """fsspec's whole-file cache over ``protocol``, under the protocol's own name, so
    DuckDB and the readers keep using ``s3://`` URLs (fsspec names it ``filecache``)."""
    import fsspec
    from fsspec.implementations.cached import WholeFileCacheFileSystem

    declared = fsspec.get_filesystem_class(protocol).protocol
    names = (declared,) if isinstance(declared, str) else tuple(declared)
    cls = _cache_classes.get(names)
    if cls is None:
        cls = type(f"Cached{protocol.title()}FileSystem", (WholeFileCacheFileSystem,), {})
        cls.protocol = names
        _cache_classes[names] = cls
    return cls(
        target_protocol=protocol,
        target_options=dict(options),
        cache_storage=os.path.join(cache_dir, protocol),
        check_files=False,
        same_names=False,
    )


_default_storage = Storage()


def default_storage() -> Storage:
    """The current session's storage options (those of ``init(storage_options=...)``)."""
    return _default_storage


def set_default_storage(storage: Storage) -> None:
    """Make ``storage`` what paths without options of their own are opened with."""
    global _default_storage
    _default_storage = storage


# -- retries --------------------------------------------------------------------------

#: error codes of object stores that mean "try again later"
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "InternalError",
    "TooManyRequests",
}
_TRANSIENT_ERRNOS = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EAGAIN,
}
_TRANSIENT_NAMES = ("ConnectionError", "ConnectionClosed", "Timeout", "IncompleteRead")


def _status_and_code(exc: BaseException) -> tuple[int | None, str | None]:
    response = getattr(exc, "response", None)
    if not isinstance(response, Mapping):
        return None, None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status, response.get("Error", {}).get("Code")


def is_transient(exc: BaseException) -> bool:
    """Whether a failed storage call may succeed if repeated: a 5xx, throttling, a reset or
    refused connection, a timeout. Not a missing file, a denied request or a bad argument."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, (PermissionError, FileNotFoundError, IsADirectoryError)):
            return False
        status, code = _status_and_code(current)
        if status is not None:
            return status >= 500 or status == 429 or code in _TRANSIENT_CODES
        if code in _TRANSIENT_CODES:
            return True
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        if any(name in cls.__name__ for cls in type(current).__mro__ for name in _TRANSIENT_NAMES):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, a transient storage failure is retried."""

    attempts: int = 4
    first_delay_s: float = 0.2
    max_delay_s: float = 5.0


DEFAULT_RETRY = RetryPolicy()


def with_retries(call: Callable[[], T], what: str, policy: RetryPolicy = DEFAULT_RETRY) -> T:
    """``call()``, repeated with exponential backoff while it fails transiently. The error
    that ends it names ``what`` (the operation and its URL), with credentials removed."""
    delay = policy.first_delay_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except MillpondError:  # already says what went wrong, in millpond's words
            raise
        except Exception as exc:  # noqa: BLE001 - classified, then re-raised
            transient = is_transient(exc)
            if transient and attempt < policy.attempts:
                time.sleep(delay)
                delay = min(policy.max_delay_s, delay * 2)
                continue
            raise storage_error(exc, what, attempts=attempt if transient else 0) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def storage_error(exc: BaseException, what: str, attempts: int = 0) -> OSError:
    """An error a user can act on for a failed storage call: what failed, on which URL,
    and why in one line (the bucket is in the URL; no botocore traceback to read)."""
    from millpond.errors import StorageError

    reason = _reason(exc)
    tried = f" (failed {attempts} times)" if attempts > 1 else ""
    error = StorageError(redact(f"{what} failed{tried}: {reason}"))
    error.transient = is_transient(exc)
    return error


def _reason(exc: BaseException) -> str:
    status, code = _status_and_code(exc.__cause__ or exc)
    if isinstance(exc, PermissionError) or status == 403:
        return (
            f"access denied ({exc}); check the credentials and endpoint in storage_options "
            "or the environment"
        )
    if isinstance(exc, FileNotFoundError) or status == 404:
        return f"not found ({exc})"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" + (f" [{code}]" if code else "")
