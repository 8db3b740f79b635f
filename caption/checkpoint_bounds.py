"""Checkpoints are bounded before torch inflates anything: torch.save writes an uncompressed zip, so
an entry that is compressed, or sizes (declared by the zip or by the tensors) beyond the file's own
size, can only be a forgery (a 4 MB file that inflates to gigabytes). `bounded` reads the zip's
directory and the pickle that lists the tensors, with every global a stub that never runs, and no
tensor. tests/test_checkpoint_bounds.py pins it."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

from .errors import CheckpointError
from .safe_read import clip

SLACK = 1 << 16


class _Stub:
    """Whatever a pickle names: built, called, filled, and never run."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Stub()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Probe(pickle.Unpickler):
    """Reads a torch pickle without building it: each global is a stub, each tensor storage a
    record of its declared byte size."""

    def __init__(self, f):
        super().__init__(f)
        self.storages, self.classes = {}, {}

    def find_class(self, module, name):
        key = f"{module}.{name}"
        if key not in self.classes:
            self.classes[key] = type(str(name), (_Stub,), {"qualname": key})
        return self.classes[key]

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage"):
            kind, key, numel = getattr(pid[1], "qualname", ""), pid[2], pid[4]
            if not isinstance(numel, int) or numel < 0:
                raise ValueError("a tensor of no size")
            self.storages[str(key)] = numel * _element_size(kind)
        return _Stub()


def _element_size(storage: str) -> int:
    name = storage.rsplit(".", 1)[-1]
    for prefix, size in (("Untyped", 1), ("Byte", 1), ("Char", 1), ("Bool", 1), ("QUInt", 1), ("QInt8", 1),
                         ("Half", 2), ("BFloat16", 2), ("Short", 2), ("Float8", 1), ("Float", 4), ("Int", 4),
                         ("QInt32", 4),
                         ("ComplexDouble", 16), ("ComplexFloat", 8)):
        if name.startswith(prefix):
            return size
    return 8        # Double, Long, and whatever else: the largest plain element


LEGACY_MAGIC = 0x1950a86a20f9469cfc6c      # the first pickle of torch's older (non-zip) format


def bounded(path: Path, name: str) -> None:
    """CheckpointError unless every size the file declares fits in its own size, checked by
    reading the zip's directory and the pickle of tensors only, never a tensor."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":
                f.seek(0)
                storages = _zip_storages(f, size, name)
            else:
                f.seek(0)
                probe = _Probe(f)
                if probe.load() != LEGACY_MAGIC:
                    raise ValueError("not a torch file")
                probe.load(), probe.load()      # protocol version, system info
                probe.load()                     # the object, its tensors recorded
                storages = probe.storages
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001  (whatever a foreign or cut file makes the parsers raise)
        raise CheckpointError(f"{name}: not a readable checkpoint ({type(e).__name__})") from None
    declared = sum(storages.values())
    if declared > size + SLACK:
        raise CheckpointError(f"{name}: its tensors declare {declared:,} bytes, more than the file's {size:,}; "
                              "refused before reading them")


def _zip_storages(f, size: int, name: str) -> dict:
    with zipfile.ZipFile(f) as z:
        infos = z.infolist()
        packed = next((i for i in infos if i.compress_type != zipfile.ZIP_STORED), None)
        if packed is not None:
            raise CheckpointError(f"{name}: entry {clip(packed.filename, 80)} is compressed, which torch.save "
                                  "never does; refused before inflating it")
        declared = sum(max(i.file_size, i.compress_size) for i in infos)
        if declared > size + SLACK:
            raise CheckpointError(f"{name}: its entries declare {declared:,} bytes, more than the file's "
                                  f"{size:,}; refused before reading them")
        pkl = next((i for i in infos if i.filename.endswith("data.pkl")), None)
        if pkl is None:
            raise ValueError("no data.pkl")
        with z.open(pkl) as data:
            probe = _Probe(data)
            probe.load()
    return probe.storages
