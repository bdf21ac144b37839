"""millpond's own space on disk (``data_root`` and the session directories under it),
private to the user: on a shared machine another local user must not be able to read a
job's intermediate data, nor plant files or links that a job would follow."""

from __future__ import annotations

import contextlib
import logging
import os
import stat

from millpond.errors import DataRootError

log = logging.getLogger("millpond")

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _owner(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name!r} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def private_directory(path: str, what: str, hint: str = "") -> str:
    """Create ``path`` with mode 0700, or check an existing one: a real directory (not a
    symbolic link), owned by this user; looser permissions are tightened to 0700. Raises
    :class:`DataRootError` saying why otherwise (``what`` names it, ``hint`` says what to
    do instead)."""
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, PRIVATE_DIR_MODE)
    info = os.lstat(path)
    refuse = None
    if stat.S_ISLNK(info.st_mode):
        refuse = (
            f"it is a symbolic link (to {os.readlink(path)!r}), which another user may have planted"
        )
    elif not stat.S_ISDIR(info.st_mode):
        refuse = "it is not a directory"
    elif info.st_uid != os.geteuid():
        refuse = f"it belongs to {_owner(info.st_uid)}, not to you, who could read or change what jobs keep there"
    if refuse is not None:
        raise DataRootError(f"cannot use {what} {path!r}: {refuse}.{hint}")
    if stat.S_IMODE(info.st_mode) & 0o077:
        log.warning("%s %s was open to other users; making it private (0700)", what, path)
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def make_private(path: str) -> None:
    """Give a file millpond wrote for itself mode 0600 (a folder of them: 0700 and 0600)."""
    if os.path.isdir(path):
        os.chmod(path, PRIVATE_DIR_MODE)
        for root, dirs, files in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), PRIVATE_DIR_MODE)
            for name in files:
                os.chmod(os.path.join(root, name), PRIVATE_FILE_MODE)
    else:
        os.chmod(path, PRIVATE_FILE_MODE)


def user_umask() -> int:
    """This process's umask, read without changing it (Linux's /proc); 0o022 elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022
