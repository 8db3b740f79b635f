"""The training history as a file beside the checkpoint, OUT.history.jsonl: one JSON object per line,
{"kind": "step", ...} every `log_every` steps (loss, learning rate, images/s) and {"kind": "epoch", ...}
after each epoch (its validation scores); with a TensorBoard folder, the same numbers as scalars.
A resumed run first cuts the file back to the state it resumes from, so no line is there twice."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import OptionError, OutputError
from ..fileio import atomic_write, output_path, shown


def history_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".history.jsonl")


def check_tensorboard(folder: str | Path | None) -> None:
    """OptionError, before any work, when --tensorboard is given but the package is not installed."""
    if folder is None:
        return
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise OptionError("tensorboard", "needs the tensorboard package (pip install tensorboard)") from None


def _number(v):
    return v if isinstance(v, (int, str)) or v is None or (isinstance(v, float) and math.isfinite(v)) else str(v)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


class History:
    """Appends to OUT.history.jsonl (and TensorBoard) from the main process; a no-op elsewhere."""

    def __init__(self, out: str | Path, tensorboard: str | Path | None = None, active: bool = True,
                 resume_at: tuple[int, int] | None = None):
        self.path, self.active, self.writer = output_path(history_path(out)), active, None
        if not active:
            return
        kept = []
        if resume_at is not None and self.path.is_file():     # (epoch, slot) of the state resumed from
            for line in self._io(lambda: self.path.read_text(encoding="utf-8", errors="replace")).splitlines():
                try:
                    row = json.loads(line)
                    at = (row["epoch"], row.get("slot", math.inf) if row["kind"] == "step" else math.inf)
                    if at <= resume_at:
                        kept.append(line)
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue               # a line cut short by a kill (or a full disk)
        with atomic_write(self.path) as tmp:     # a full disk here leaves the old history whole
            self._io(lambda: Path(tmp).write_text("".join(k + "\n" for k in kept), encoding="utf-8"))
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(tensorboard))

    def write(self, kind: str, step: int, **row) -> None:
        if not self.active:
            return
        row = {"kind": kind, **{k: _number(v) for k, v in row.items()}}
        self._io(lambda: _append(self.path, json.dumps(row) + "\n"))
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "slot", "step"):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)

    def _io(self, work):
        """work(); a full disk (or any OSError) is one OutputError line naming the file. The
        checkpoints are written apart from it, so they stay as they were."""
        try:
            return work()
        except OSError as e:
            raise OutputError(f"{shown(self.path)}: cannot write it ({e.strerror or e}); the checkpoints "
                              "are unchanged") from None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
