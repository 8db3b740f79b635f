"""Writes that never leave a half-written file: checkpoints, PNG figures, data files."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path` (with the usual
    file mode: mkstemp makes 0600), on failure removed, so `path` is never left half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_png(image: Image.Image, out: str | os.PathLike) -> Path:
    """Write a PNG atomically: a failed save never leaves a truncated file behind."""
    out = Path(out)
    with atomic_write(out) as tmp:
        image.save(tmp, format="PNG")
    return out
