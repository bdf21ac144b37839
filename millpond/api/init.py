"""``millpond.init()``: a session from arguments, ``MILLPOND_*`` variables and the
machine's defaults (smallpond's ``smallpond.init`` options accepted)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from millpond.api.session import Session
from millpond.config import SessionConfig
from millpond.io.storage import Storage


def init(
    job_id: str | None = None,
    *,
    data_root: str | None = None,
    num_executors: int | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    memory_limit: int | str | None = None,
    engine: str | None = None,
    progress: bool | None = None,
    ray_address: str | None = None,
    max_retry: int | None = None,
    shuffle_partitions: int | None = None,
    keep_intermediate: bool | None = None,
    fail_fast: bool | None = None,
    inline_bytes: int | str | None = None,
    batch_size: int | None = None,
    pipelining: bool | None = None,
    task_timeout: float | None = None,
    target_partition_bytes: int | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | None = None,
    **smallpond_options: object,
) -> Session:
    """Start a session on the embedded engine (no services needed).

    Every setting may also come from a ``MILLPOND_<NAME>`` environment variable (e.g.
    ``MILLPOND_DATA_ROOT``, ``MILLPOND_NUM_EXECUTORS``, ``MILLPOND_MEMORY_LIMIT=8GB``);
    explicit arguments win. ``num_cpus`` is an alias of ``num_executors``. ``num_gpus``
    declares the GPUs where detection (``CUDA_VISIBLE_DEVICES``, ``nvidia-smi``, an
    imported torch) cannot see them: devices 0..N-1 on the embedded engine, the GPUs of
    the Ray instance millpond starts (an existing cluster counts its own). Stages whose input
    is at most ``inline_bytes`` (default 32MB) run in this process instead of on workers,
    which keeps small jobs fast; ``inline_bytes=0`` always uses the workers. Tasks that fail
    for a system reason (a worker died, an I/O error) are retried up to ``max_retry`` times;
    ``fail_fast=True`` turns every retry off. A GPU or actor-pool step runs in a stage of
    its own that starts on the first partitions its upstream stage finishes while that
    stage goes on (``pipelining=False`` runs stages one after another). A task running
    longer than ``task_timeout`` seconds (default: no limit; a step's own ``timeout=``
    also bounds the tasks it runs in) is stopped and retried per ``max_retry``, then fails
    with :class:`TaskTimeoutError`. Python steps always run in worker processes, where a
    crash or a hang cannot take this process down; a task whose worker grows past its
    memory budget is stopped and retried with a larger one while the session's
    ``memory_limit`` allows, then fails with ``MemoryLimitError``. With ``job_id``
    given, the session's jobs keep deterministic directories under ``data_root/job_id``,
    and running the same script again resumes each job from the tasks that had finished.
    Sources are read in tasks of about ``target_partition_bytes`` (default 256MB) of
    decoded, in-memory data each (fewer when a scan is small: two tasks per executor,
    at least 16MB), estimated from Parquet footers or a decoded sample of the files.
    ``storage_options`` are the fsspec options (credentials, ``endpoint_url``…) of every
    remote path the session reads or writes (flat, or keyed by protocol:
    ``{"s3": {...}, "gs": {...}}``); a read or write's own ``storage_options`` go on top,
    and without any, the standard environment variables and config files apply. They
    never appear in logs, errors, explain() or reports. ``cache_dir`` keeps a local copy
    of each remote file read, for data read more than once. A ``data_root`` given as a
    URL (``s3://bucket/runs``) receives each job's report when the job ends; the jobs'
    working files then go to a private local directory. Options smallpond
    accepts that have no meaning here (``job_time``, ``job_name``, ``bind_socket``,
    ``platform``, ``enable_profiling``…) are accepted and ignored.
    """
    known_ignored = {
        "job_time",
        "job_name",
        "bind_socket",
        "platform",
        "enable_profiling",
        "enable_diagnostic_metrics",
        "remove_empty_parquet",
        "override_existing",
        "cpu_limit",
        "gpu_limit",
        "ray_args",
        "memory_allocator",
    }
    unknown = set(smallpond_options) - known_ignored
    if unknown:
        raise TypeError(f"init() got unexpected argument(s) {sorted(unknown)}")
    config = SessionConfig.resolve(
        data_root=data_root,
        num_executors=num_executors if num_executors is not None else num_cpus,
        memory_limit=memory_limit,
        num_gpus=num_gpus,
        engine=engine,
        progress=progress,
        ray_address=ray_address,
        max_retry=max_retry,
        shuffle_partitions=shuffle_partitions,
        keep_intermediate=keep_intermediate,
        fail_fast=fail_fast,
        inline_bytes=inline_bytes,
        batch_size=batch_size,
        pipelining=pipelining,
        task_timeout=task_timeout,
        target_partition_bytes=target_partition_bytes,
    )
    if cache_dir is None:
        cache_dir = os.environ.get("MILLPOND_CACHE_DIR") or None
    storage = Storage.of(
        storage_options,
        cache_dir=os.path.abspath(os.path.expanduser(cache_dir)) if cache_dir else None,
    )
    return Session(config, session_id=job_id, storage=storage)
