"""Stopping a run without losing its work. A run that diverges (a loss or a weight NaN or infinite)
stops before the step that would spread it, its last good files left as they were. By signal:
SIGTERM (a scheduler's or `docker stop`'s, a `kill`) is taken as SIGINT (Ctrl-C). Inside the batch
loop the first one is noted and the run stops at the end of the batch, after writing the resumable
state as --save-every does, so that --resume continues at the next batch, bit for bit. A second
one, or one outside the batch loop, interrupts at once (KeyboardInterrupt); the trainer then saves
what it can. Either way the lock is released and the CLI exits with 130, the status of an
interrupt (for SIGTERM too: it asked for the same thing). Under torchrun a signal interrupts at
once and nothing more is saved: saving takes every process, and the others may be gone."""
from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import InputError
from ..fileio import shown
from . import distributed as dist
from .state import last_path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal after saving its state; str(e) says where (one line)."""


class Stop:
    """What the signal handler saw. `deferring`: inside the batch loop, where a first signal only
    sets `signal` (the batch ends, the state is saved, then Interrupted); elsewhere it raises."""

    def __init__(self, defer: bool = True):
        self.defer, self.deferring, self.signal = defer, False, None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def handle(self, signum, frame) -> None:
        if self.defer and self.deferring and self.signal is None:
            self.signal = signum
            return
        self.signal = signum
        raise KeyboardInterrupt

    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "a signal"


@contextmanager
def stop_on_signals(defer: bool = True) -> Iterator[Stop]:
    """SIGINT and SIGTERM go to a Stop for the duration (from the main thread only: Python sets
    handlers there); the previous handlers come back after."""
    stop = Stop(defer)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    before = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, stop.handle)
    try:
        yield stop
    finally:
        for s, h in before.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def check_finite(loss: float, epoch: int, batch: int, out: str | Path, w, device) -> None:
    """InputError when the loss of this batch (of any process) is NaN or infinite: the run has
    diverged, and a step would spread the NaN to every weight."""
    bad = not math.isfinite(loss)
    if w.distributed:        # every process stops together, or the others wait for it for ever
        bad = bool(dist.mean_across(torch.tensor([float(bad)], device=device), w).item() > 0)
    if bad:
        raise InputError(f"the training loss is {loss} at batch {batch} of epoch {epoch}: the run diverged and "
                         f"stopped; {_kept(out)} (try a lower --lr or --clip)")


def check_weights(model: torch.nn.Module, epoch: int, out: str | Path) -> None:
    """InputError when a weight became NaN or infinite in the last step of an epoch (the loss
    was still finite): nothing of this epoch is saved."""
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise InputError(f"{name} is NaN or infinite after epoch {epoch}: the run diverged and stopped; "
                             f"{_kept(out)} (try a lower --lr or --clip)")


def _kept(out: str | Path) -> str:
    if last_path(out).is_file():
        return f"{shown(out)} and {shown(last_path(out))} keep the last good state"
    return "nothing of it was saved"
