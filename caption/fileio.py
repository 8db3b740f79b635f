"""Writes that never lose data: never a half-written file, never over anything but a regular file,
never over one of the command's own inputs, never over a file of another kind (a checkpoint, a
data set, an image) than the one the command writes. A symbolic link is followed to its target,
which is written in place of the link's target (the link stays a link). Every failure, a full
disk included, is an OutputError naming the file; the previous file stays as it was."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, OutputError

NAME_MAX = 255          # bytes in one file name on every common Linux file system
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")     # kernel and device trees: never an output
# what a command writes -> what it may replace: an empty file, or a file of the same kind
KINDS = ("checkpoint", "results", "figure", "text", "jsonl", "page")


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
    if not os.fspath(path):                     # Path("") would be "." (a directory)
        raise error(f"an empty path is no {what}")
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


def sniff(path: Path) -> str | None:
    """The kind of an existing file from its first bytes: "checkpoint" (a zip, as torch.save
    writes), "figure" (an image or PDF), "results" (a JSON list), "data set" (a JSON object: a
    captions, split or manifest file), "jsonl" (JSON lines), "page" (HTML), "text", or None when empty."""
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NONBLOCK)) as f:
            head = f.read(4096)
    except OSError:
        return None
    if not head:
        return None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80\x02"):
        return "checkpoint"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"%PDF", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")) \
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "figure"
    text = head.lstrip()
    if text[:14].lower() == b"<!doctype html" or text[:5].lower() == b"<html":
        return "page"
    if text.startswith(b"["):
        return "results"
    if text.startswith(b"{"):
        lines = text.split(b"\n", 2)       # JSON lines: an object per line, a second one begun
        return "jsonl" if len(lines) > 1 and lines[0].rstrip().endswith(b"}") and \
            lines[1].lstrip().startswith(b"{") else "data set"
    return "text"


def _special(path: Path) -> str | None:
    for p in (Path(os.path.abspath(path)), Path(os.path.realpath(path))):
        for root in SPECIAL_ROOTS:
            if p == Path(root) or Path(root) in p.parents:
                return root
    return None


def output_path(path: str | os.PathLike, kind: str | None = None,
                inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Where a write to `path` goes: the path itself, or the target of a symbolic link. OutputError,
    checked before any work so that nothing is lost to a bad --out, when it is
      - something other than a regular file (a directory, a FIFO, a device) or under /proc, /sys, /dev;
      - one of `inputs` (the same file by device and inode, through links);
      - a file of another kind than `kind` (a checkpoint where results go, a data set, an image);
      - a name longer than a file system takes, or in a folder that cannot be written."""
    if not os.fspath(path):
        raise OutputError("an empty path is no output file")
    path = Path(path)
    root = _special(path)
    if root:
        raise OutputError(f"{shown(path)}: is under {root}; write to a file on disk instead")
    target = Path(os.path.realpath(path))
    if len(target.name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise OutputError(f"{shown(path)}: the file name is {len(target.name.encode('utf-8', 'surrogateescape'))} "
                          f"bytes; file systems take at most {NAME_MAX}")
    try:   # stat the path itself (following links): /dev/stdout's target has no name to test
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as e:
        raise OutputError(f"{shown(path)}: cannot write it ({e.strerror})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{shown(path)}: is {kind_of(st.st_mode)}; refusing to write over it")
    if st is not None:
        for source in inputs:
            if source is not None and _same(st, source):
                raise OutputError(f"{shown(path)}: is also this command's input {shown(source)}; "
                                  "refusing to write over it")
        found = sniff(target) if kind else None
        if found is not None and found != kind:
            raise OutputError(f"{shown(path)}: holds {_article(found)}, not {_article(kind)}; refusing to "
                              "write over it (remove it, or choose another name)")
    folder = target.parent
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise OutputError(f"{shown(path)}: cannot write in {shown(existing)}")
    return target


def _article(kind: str) -> str:
    return {"checkpoint": "a checkpoint", "results": "a JSON list (results)", "figure": "an image",
            "data set": "a JSON object (a data set or manifest)", "jsonl": "JSON lines", "page": "an HTML page",
            "text": "text"}.get(kind, kind)


def _same(st: os.stat_result, other: str | os.PathLike) -> bool:
    try:
        o = os.stat(other)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (o.st_dev, o.st_ino)


def folder(path: str | os.PathLike) -> Path:
    """An output folder: OutputError when `path` exists and is not a directory, or cannot be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{shown(path)}: exists and is not a folder")
    try:
        output_path(path / "_")     # its parent chain must be writable
    except OutputError as e:        # name the folder, not the probe inside it
        raise OutputError(str(e).replace(shown(path / "_"), shown(path), 1)) from None
    return path


def _temp_prefix(target: Path) -> str:
    """`.NAME.` for a temp file beside `target`, NAME cut (with a hash of the whole name, so cut
    names stay apart) so that the temp name stays within NAME_MAX bytes."""
    raw = target.name.encode("utf-8", "surrogateescape")
    if len(raw) > 180:
        digest = hashlib.sha1(raw).hexdigest()[:8]
        raw = raw[:170].decode("utf-8", "ignore").encode("utf-8", "surrogateescape") + b"~" + digest.encode()
    return "." + raw.decode("utf-8", "surrogateescape") + "."


def remove_stale_temps(target: Path, folders: bool = False) -> None:
    """Temporary files (or folders) of an earlier write to `target` whose writer is dead: its
    process id (in the name) runs no process here AND nobody holds the flock a writer keeps on
    its temp while it writes, so a writer in another PID namespace or container sharing the
    folder is not mistaken for a dead one. Anything else is left alone."""
    prefix = _temp_prefix(target)
    for old in target.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        m = re.fullmatch(r"(\d+)-[^./]*\.tmp", old.name[len(prefix):])
        if (not m or pid_alive(int(m.group(1))) or old.is_symlink() or old.is_dir() != folders
                or _claimed(old, fcntl.LOCK_EX | fcntl.LOCK_NB) is None):
            continue
        shutil.rmtree(old, ignore_errors=True) if folders else old.unlink(missing_ok=True)


def _claimed(path: str | os.PathLike, how: int = fcntl.LOCK_EX) -> int | None:
    """A file descriptor holding a flock on `path` (released when closed), or None when another
    holds it; on a file system without flock the claim is granted (the process id still counts)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, how)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        pass
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()      # read once: os.umask can only be read by setting it


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs (in this PID namespace)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM,
                errno.ENAMETOOLONG)


@contextmanager
def atomic_write(path: str | os.PathLike, kind: str | None = None,
                 inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[str]:
    """Yield a temporary path beside the target; on success it is renamed onto it (with the usual
    file mode: mkstemp makes 0600), on failure removed, so the target is never left half-written.
    The guards of `output_path` apply; a full disk is an OutputError naming the file."""
    target = output_path(path, kind, inputs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{_temp_prefix(target)}{os.getpid()}-",
                                   suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{shown(path)}: cannot write it ({e.strerror})") from None
    claim = _claimed(tmp)           # held while we write: no other process's cleanup takes it
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in WRITE_ERRORS:
            raise OutputError(f"{shown(path)}: cannot write it ({e.strerror}); the previous file, if any, "
                              "is unchanged") from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _release(claim)


@contextmanager
def atomic_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a new private folder beside `out`; on success it is renamed onto `out`, on failure
    removed, so an interrupted or failed write (a full disk is an OutputError) leaves no `out`,
    never new files beside old ones. `out` must be new or an empty folder; folders left by dead
    writers are removed, a live writer's are not."""
    folder(out)
    target = Path(os.path.realpath(out))
    if target.is_dir() and any(target.iterdir()):
        raise OutputError(f"{shown(out)}: exists and is not empty; write to a new folder (or remove it first)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target, folders=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{_temp_prefix(target)}{os.getpid()}-",
                                    suffix=".tmp"))
    except OSError as e:
        raise OutputError(f"{shown(out)}: cannot write beside it ({e.strerror})") from None
    claim = _claimed(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)        # mkdtemp makes 0700: the usual folder mode instead
        os.rename(tmp, target)                # onto an empty folder too (rename(2) replaces it)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise OutputError(f"{shown(out)}: was filled by another process meanwhile; nothing was written") from None
        raise OutputError(f"{shown(out)}: cannot write it ({e.strerror}); nothing was written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _release(claim)
