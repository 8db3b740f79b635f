"""Writes that never leave a half-written file and never write over anything but a regular file:
checkpoints, PNG figures, data files. A symbolic link is followed to its target, which is written
in place of the link's target (the link stays a link)."""
from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from .errors import InputError, OutputError


def shown(path: str | os.PathLike) -> str:
    """A file name fit for one line of a message: control characters (a terminal escape, a newline)
    are written as escapes."""
    text = str(path)
    return text if text.isprintable() else repr(text)[1:-1]


def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, for a message."""
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def regular_file(path: str | os.PathLike, what: str, error=None) -> Path:
    """`path` when it is a regular file (a link to one counts); else `error` (an exception class)
    naming it: missing, or a directory, FIFO or device, which must never be opened (a FIFO blocks)."""
    error = error or InputError
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{shown(path)}: no such {what}") from None
    except OSError as e:
        raise error(f"{shown(path)}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise error(f"{shown(path)}: is {kind_of(mode)}, not a regular file")
    return path


@contextmanager
def run_lock(path: str | os.PathLike) -> Iterator[Path]:
    """PATH.lock held for the duration, holding this process's id: a second run on the same output
    is refused with the first one's id; a lock left by a process that no longer runs is taken over."""
    lock = Path(str(output_path(path)) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise OutputError(f"{shown(path)}: another run (process {pid}) is writing it; "
                                  f"if none is, remove {shown(lock)}") from None
            lock.unlink(missing_ok=True)     # stale: its process is gone
    else:
        raise OutputError(f"{shown(lock)}: cannot take the lock")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def output_path(path: str | os.PathLike) -> Path:
    """Where a write to `path` goes: the path itself, or the target of a symbolic link. OutputError
    when that is something other than a regular file (a directory, a FIFO, a device) or when its
    folder cannot be written; checked before any work, so nothing is lost to a bad --out."""
    path = Path(path)
    target = Path(os.path.realpath(path))
    try:   # stat the path itself (following links): /dev/stdout's target has no name to test
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputError(f"{shown(path)}: is {kind_of(mode)}; refusing to write over it")
    folder = target.parent
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise OutputError(f"{shown(path)}: cannot write in {shown(existing)}")
    return target


def folder(path: str | os.PathLike) -> Path:
    """An output folder: OutputError when `path` exists and is not a directory, or cannot be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{shown(path)}: exists and is not a folder")
    output_path(path / "_")     # its parent chain must be writable
    return path


def remove_stale_temps(target: Path) -> None:
    """Temporary files of an earlier write to `target` that was killed before it could clean up."""
    for old in target.parent.glob(f".{target.name}.*.tmp"):
        if old.is_file() and not old.is_symlink():
            old.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside the target; on success it is renamed onto it (with the usual
    file mode: mkstemp makes 0600), on failure removed, so the target is never left half-written."""
    target = output_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(image: Image.Image, out: str | os.PathLike) -> Path:
    """Write a PNG atomically: a failed save never leaves a truncated file behind."""
    out = Path(out)
    with atomic_write(out) as tmp:
        image.save(tmp, format="PNG")
    return out
