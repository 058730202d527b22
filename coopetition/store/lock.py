"""The run lock: ``RUN/.lock``, an OS file lock (flock) held by the one process writing the run.

The lock dies with its process (even on SIGKILL), so there are no stale locks; the file holds the holder's pid for
humans. A planted symlink, FIFO or other non-regular ``.lock`` is refused, never followed or blocked on.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from coopetition.errors import ConfigError, DataError
from coopetition.store.contain import LOCK, contained


def is_locked(path: Path) -> bool:
    """Whether a live process holds ``path``'s run lock (probes with a non-blocking flock)."""
    try:
        lock = contained(path, LOCK)
        fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)  # a planted FIFO or symlink never blocks
    except (DataError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False


def take_lock(path: Path) -> int:
    """Take run ``path``'s OS lock or raise (ConfigError: another process holds it); returns the held descriptor."""
    lock = path / LOCK.name
    while True:
        try:  # never through a symlink: a planted .lock -> FILE would be truncated below
            fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as err:
            raise DataError(f"cannot take the run lock {lock}: {err.strerror} (a symlink or not a file?)") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise DataError(f"run lock {lock} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock.read_text().strip() if lock.is_file() else "?"
            raise ConfigError(f"run dir {path} is being written by another process (pid {holder or '?'}, "
                              f"{lock}); wait for it or stop it first") from None
        try:  # the file we locked may have been unlinked by a closing writer: retry on the new one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def release_lock(path: Path, fd: int) -> None:
    """Drop the lock file and the lock (the unlink first, so a waiting writer retries on a fresh file)."""
    (path / LOCK.name).unlink(missing_ok=True)
    os.close(fd)
