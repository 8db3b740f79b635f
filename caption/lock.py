"""One run per output: OUT.lock, held with flock(2) for the run's duration. The kernel drops the
lock when its process dies, however it dies, so a lock file left behind by a killed run, one
naming a process of another boot or PID namespace (or PID 1), or holding odd contents, is simply
taken over; the process id in the file only names the holder in the message."""
from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError
from .fileio import kind_of, output_path, shown


def _holder(fd: int) -> str:
    """The process id the lock file names, for the message (its first 64 bytes, digits only)."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
    except OSError:
        text = []
    return f"process {text[0]}" if text and text[0].isdigit() and len(text[0]) < 12 else "another process"


@contextmanager
def run_lock(path: str | os.PathLike) -> Iterator[Path]:
    """PATH.lock held for the duration: a second run on the same output is refused, naming the
    first one's process; the lock file is removed at the end."""
    lock = Path(str(output_path(path)) + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{shown(lock)}: cannot make its folder ({e.strerror})") from None
    for _ in range(20):       # another run may remove the file between our open and our lock
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except IsADirectoryError:
            raise OutputError(f"{shown(lock)}: is a directory, not a lock file; remove it") from None
        except OSError as e:
            raise OutputError(f"{shown(lock)}: cannot take the lock ({e.strerror}); remove it if no run "
                              "is writing") from None
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise OutputError(f"{shown(lock)}: is {kind_of(mode)}, not a lock file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            os.close(fd)
            raise OutputError(f"{shown(path)}: another run ({who}) is writing it; if none is, "
                              f"remove {shown(lock)}") from None
        except OSError as e:      # a file system without flock (some network and FUSE mounts)
            os.close(fd)
            raise OutputError(f"{shown(lock)}: cannot lock it on this file system ({e.strerror}); write "
                              "OUT to a local disk") from None
        try:
            same = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)          # we locked a file the previous holder had just removed: again
    else:
        raise OutputError(f"{shown(lock)}: cannot take the lock")
    try:
        try:          # the id only names the holder in a message: a full disk must not stop the run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        yield lock
    finally:
        try:
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)
