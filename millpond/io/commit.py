"""Outputs appear complete or not at all: tasks write into a staging directory beside the
destination (same filesystem), and the job commits it with renames."""

from __future__ import annotations

import os
import shutil
import uuid

from millpond.errors import OutputExistsError, PlanError

MODES = ("error", "overwrite", "append", "ignore")


def check_destination(path: str, mode: str) -> bool:
    """Validate ``mode`` against what is at ``path``; False means nothing should be written."""
    if mode not in MODES:
        raise PlanError(f"mode must be one of {MODES}, got {mode!r}")
    if os.path.exists(path):
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
    return True


def staging_dir(path: str, job_id: str) -> str:
    """A hidden directory beside ``path`` that tasks write into before the commit."""
    parent, name = os.path.split(os.path.abspath(path.rstrip("/")))
    return os.path.join(parent, f".{name}.millpond-staging-{job_id}")


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
        shutil.rmtree(task_dir)


def commit(staging: str, path: str, mode: str) -> None:
    """Move the staged output into place atomically (per file for ``append``)."""
    path = os.path.abspath(path.rstrip("/"))
    _merge_task_dirs(staging)
    if mode == "append" and os.path.isdir(path):
        for root, _dirs, files in os.walk(staging):
            rel = os.path.relpath(root, staging)
            target = os.path.normpath(os.path.join(path, rel))
            os.makedirs(target, exist_ok=True)
            for f in files:
                os.replace(os.path.join(root, f), os.path.join(target, f))
        shutil.rmtree(staging, ignore_errors=True)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if mode == "overwrite" and os.path.exists(path):
        trash = os.path.join(
            os.path.dirname(path), f".{os.path.basename(path)}.millpond-old-{uuid.uuid4().hex[:8]}"
        )
        os.replace(path, trash)
        os.replace(staging, path)
        if os.path.isdir(trash):
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.remove(trash)
        return
    if os.path.exists(path):
        raise OutputExistsError(
            f"output path {path!r} appeared while the job ran; the result is left in {staging!r}"
        )
    os.replace(staging, path)


def abort(staging: str) -> None:
    shutil.rmtree(staging, ignore_errors=True)
