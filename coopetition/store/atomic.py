"""Write-to-temp, fsync, rename: a reader (or a crash) never sees half a file (``atomic_write``) or a folder holding
parts of two versions (``atomic_directory``)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from coopetition.errors import ConfigError
from coopetition.faults import fault_point


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then atomically move the finished file to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        fault_point("atomic_write")  # test hook (coopetition/faults.py): the temporary is complete, not yet renamed
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling folder to fill; on success it replaces ``path`` in one step, so a reader or a
    crash sees the previous complete folder or the new complete one (or, on a system without an atomic directory
    swap, briefly none), never a mix. On an exception the temporary folder is removed and ``path`` is untouched.

    One writer per ``path`` at a time (an OS lock, ``.NAME.lock`` beside it; a second is a ConfigError). Leftovers of
    a killed writer (``.NAME.new-*``, ``.NAME.old-*``) are cleaned when the next one starts; if it died between the
    two renames of the fallback swap, the previous folder is put back. The swap is ``renameat2(RENAME_EXCHANGE)`` on
    Linux, ``renamex_np(RENAME_SWAP)`` on macOS, else two renames. Files are fsynced before the swap.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{path} exists and is not a directory; not replacing it")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    fd = _take_lock(lock, path)
    try:
        _clean_stale(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the folder gets what mkdir would (755 under 022)
        try:
            yield tmp
            _fsync_tree(tmp)
            _swap_into_place(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # on success: the previous folder, swapped out
        fsync_dir(path.parent)
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _take_lock(lock: Path, path: Path) -> int:
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"{path} is being written by another process ({lock}); wait for it") from None
        try:  # the file we locked may have been unlinked by a finishing writer: retry on the new one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _clean_stale(path: Path) -> None:
    """Under the lock every temporary is a dead writer's: restore a previous folder caught mid-swap, drop the rest."""
    old = sorted(path.parent.glob(f".{path.name}.old-*"))
    if old and not path.exists():
        os.rename(old.pop(), path)
    for stale in [*old, *path.parent.glob(f".{path.name}.new-*")]:
        shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Afterwards ``path`` holds ``tmp``'s folder and ``tmp`` the previous one (if any)."""
    if not path.exists():
        try:
            os.rename(tmp, path)
            return
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if _exchange(tmp, path):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rmdir(old)  # a unique free name
    os.rename(path, old)  # a crash here leaves no `path`; the next writer puts `old` back
    os.rename(tmp, path)
    os.rename(old, tmp)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directory entries; False where the system or file system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "renameat2"):
        result = libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif hasattr(libc, "renamex_np"):
        result = libc.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


_AT_FDCWD, _RENAME_EXCHANGE, _RENAME_SWAP = -100, 2, 2


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(folder))


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable: without it a crash can lose a file that was fsynced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
