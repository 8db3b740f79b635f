"""The training history as a file beside the checkpoint, OUT.history.jsonl: one JSON object per line,
{"kind": "step", ...} every `log_every` steps (loss, learning rate, images/s) and {"kind": "epoch", ...}
after each epoch (its validation scores); with a TensorBoard folder, the same numbers as scalars.
A resumed run first cuts the file back to the state it resumes from, so no line is there twice."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import OptionError
from ..fileio import output_path


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


class History:
    """Appends to OUT.history.jsonl (and TensorBoard) from the main process; a no-op elsewhere."""

    def __init__(self, out: str | Path, tensorboard: str | Path | None = None, active: bool = True,
                 resume_at: tuple[int, int] | None = None):
        self.path, self.active, self.writer = output_path(history_path(out)), active, None
        if not active:
            return
        kept = []
        if resume_at is not None and self.path.is_file():     # (epoch, slot) of the state resumed from
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                    at = (row["epoch"], row.get("slot", math.inf) if row["kind"] == "step" else math.inf)
                except (ValueError, KeyError, TypeError):
                    continue               # a line cut short by a kill
                if at <= resume_at:
                    kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(tensorboard))

    def write(self, kind: str, step: int, **row) -> None:
        if not self.active:
            return
        row = {"kind": kind, **{k: _number(v) for k, v in row.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "slot", "step"):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
