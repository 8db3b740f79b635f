"""The files of a run at OUT (the best model OUT, the resumable state OUT.last.pt, the history
OUT.history.jsonl, the lock OUT.lock) and the guards a run passes before any work: every name fits
a file system, none is one of the command's inputs or a file of another kind, and a fresh run never
writes over an earlier run's files unless told to (--force), which moves them aside first."""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import InputError, OutputError
from ..fileio import NAME_MAX, output_path, shown, sniff
from .history import history_path
from .reward import cider_path
from .state import last_path


def run_files(out: str | Path) -> list[Path]:
    """OUT, OUT.last.pt, OUT.history.jsonl and (self-critical runs) OUT.cider.pt: the files a run
    writes (its lock aside)."""
    out = Path(out)
    return [out, last_path(out), history_path(out), cider_path(out)]


def held(out: str | Path) -> list[Path]:
    """The files of an earlier run at OUT: those that exist and hold something (an empty file
    holds nothing to lose)."""
    found = []
    for p in run_files(out):
        try:
            if p.stat().st_size > 0:
                found.append(p)
        except OSError:
            pass
    return found


def check_outputs(out: str | Path, resume: bool = False, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Before any work: InputError for --resume with nothing to resume; OutputError when a name
    derived from OUT is too long, or when OUT or OUT.last.pt is one of `inputs` or a file of
    another kind than a checkpoint (OUT.history.jsonl: than JSON lines, or the start of one)."""
    out = Path(out)
    if resume and not last_path(out).is_file():
        raise InputError(f"{shown(last_path(out))}: nothing to resume from; leave out --resume to start a fresh run")
    inputs = [i for i in inputs if i is not None]
    for target in run_files(out)[:2]:
        output_path(target, "checkpoint", inputs)
    history = output_path(history_path(out), None, inputs)
    # a history whose first line a kill or a full disk cut short sniffs as a JSON object: still ours
    if history.is_file() and sniff(history) not in (None, "jsonl", "data set"):
        output_path(history, "jsonl", inputs)          # the refusal, in output_path's words
    output_path(run_files(out)[3], "checkpoint", inputs)    # OUT.cider.pt, shorter than the history's name
    lock = Path(str(output_path(out)) + ".lock")            # as lock.run_lock names it
    if len(lock.name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise OutputError(f"{shown(out)}: the name of its lock file would be longer than {NAME_MAX} bytes; "
                          "choose a shorter name")


def check_fresh(out: str | Path, resume: bool = False, force: bool = False) -> None:
    """OutputError, before any work, when a fresh run (no --resume, no --force) would replace the
    files of an earlier run at OUT; the message names them and the two ways on."""
    found = held(out)
    if resume or force or not found:
        return
    names = ", ".join(shown(p.name) for p in found)
    hint = ("give --resume to continue it, or --force to start over" if last_path(out) in found
            else "give --force to start over")
    raise OutputError(f"{shown(out)}: holds an earlier run ({names}); {hint} (--force moves its files "
                      "aside first)")


def move_aside(out: str | Path, log: Callable[[str], None]) -> list[Path]:
    """Rename an earlier run's files at OUT to OUT.replaced-K (OUT stem.replaced-K.pt, its .last.pt
    and .history.jsonl: a run of its own that can be resumed), K the first number no earlier set
    uses; returns the new names. One line through `log` says where they went."""
    out = Path(out)
    if not held(out):
        return []
    for k in itertools.count(1):
        dest = out.with_name(f"{out.stem}.replaced-{k}{out.suffix}" if out.suffix else f"{out.name}-replaced-{k}")
        if not any(os.path.lexists(p) for p in run_files(dest)):
            break
    pairs = [(src, dst) for src, dst in zip(run_files(out), run_files(dest)) if os.path.lexists(src)]
    for _, dst in pairs:
        output_path(dst)                   # a name too long for the file system: before any rename
    for src, dst in pairs:
        try:
            os.rename(src, dst)
        except OSError as e:
            raise OutputError(f"{shown(src)}: cannot move it aside to {shown(dst.name)} ({e.strerror})") from None
    log(f"moved the earlier run at {shown(out)} aside: " + ", ".join(f"{shown(s.name)} -> {shown(d.name)}"
                                                                      for s, d in pairs))
    return [d for _, d in pairs]
