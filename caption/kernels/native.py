"""The package's C kernels (caption/kernels/native/*.c), compiled on the user's machine by its own C
compiler and called through ctypes: a kernel for speed only.

Why compiled here and not shipped built: the loops are vectorised for this CPU (-march=native), and
a C file needs no wheel per platform. The first use compiles (about a second with gcc) into the
user's cache folder, $XDG_CACHE_HOME/caption or ~/.cache/caption, named by a digest of the source,
the flags, the compiler's version and the CPU's features, so a cache shared by machines of other
CPUs never loads a build it cannot run. It is written under a temporary name and renamed, so
processes that compile at once (torchrun's) never load a half-written file.

Where there is no compiler, the build fails, the cache cannot be written, or CAPTION_NATIVE=0 is
set, `library()` is None and the callers take their PyTorch path; `status()` says which and why.
The kernels: the additive score (additive_score.c), the soft context (context.c) and the LSTM cell
(lstm_cell.c), the last two for caption/kernels/attention_lstm.py only; a tiled transpose
(transpose.c) for caption/kernels/matmul.py's weight gradients; each row's cross-entropy
(cross_entropy.c) for caption/kernels/cross_entropy.py; and batch norm with ReLU (batch_norm.c) for
caption/kernels/batch_norm.py.
`kernel("eager")` turns the native path off for a block (a benchmark's or a test's side-by-side).
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FOLDER = Path(__file__).with_name("native")
# compiled together into one library
SOURCES = ("additive_score.c", "context.c", "lstm_cell.c", "transpose.c", "cross_entropy.c", "batch_norm.c")
HEADERS = ("rows.h", "tanh.h")
FLAGS = ("-O3", "-fopenmp-simd", "-fno-math-errno", "-fPIC", "-shared")
LIBS = ("-lm",)                   # after the sources: cross_entropy.c calls logf, batch_norm.c sqrt
# tried in turn: tuned for this CPU and threaded by OpenMP, then without the tuning, then neither
VARIANTS = (("-fopenmp", "-march=native"), ("-fopenmp",), ())
COMPILE_SECONDS = 120
DISABLE = "CAPTION_NATIVE"        # set to 0 to take PyTorch's path everywhere

LOOP_LINE = "the soft-attention LSTM loop: forward and backward by hand (caption.kernels.attention_lstm)"
_ENABLED = contextvars.ContextVar("caption_native_kernels", default=True)


@contextlib.contextmanager
def kernel(name: str):
    """Within the block, callers take the compiled kernels ("native", where built) or PyTorch's ("eager")."""
    if name not in ("native", "eager"):
        raise ValueError(f"kernel must be 'native' or 'eager', got {name!r}")
    token = _ENABLED.set(name == "native")
    try:
        yield
    finally:
        _ENABLED.reset(token)


def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they are off here or could not be built (`status()`)."""
    return _build()[0] if _ENABLED.get() else None


def built() -> ctypes.CDLL | None:
    """The compiled kernels whatever `kernel()` says: a backward pass follows its forward's choice."""
    return _build()[0]


def status() -> str:
    """One line: which path the additive score takes in training on this machine, and why."""
    lib, how = _build()
    if lib is None:
        return f"additive score: PyTorch's ops ({how})"
    return f"additive score: the package's C kernel ({how})" if _ENABLED.get() else \
        "additive score: PyTorch's ops (the C kernel is turned off in this block)"


def training_line(model: "torch.nn.Module", device: "torch.device") -> str:
    """The line a training run on `device` prints about its additive score (`status()`), or '' where
    `model` has no additive score (a module whose `score` is "additive", as caption.attention's
    Attention) or trains off the CPU. A soft-attention LSTM decoder (a module with an `lstm` whose
    config's attention is "soft") also runs its loop by hand with the C kernels: the line says so."""
    additive = any(getattr(m, "score", None) == "additive" for m in model.modules())
    if not additive or device.type != "cpu":
        return ""
    soft_loop = any(hasattr(m, "lstm") and getattr(getattr(m, "config", None), "attention", None) == "soft"
                    for m in model.modules())
    if soft_loop and library() is not None:
        return f"{status()}; {LOOP_LINE}"
    return status()


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "caption"


def _cpu_features() -> str:
    """What the CPU can run (its flags line on Linux), so a build is tied to the CPU it was tuned for."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


@functools.cache
def _build() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get(DISABLE, "1") == "0":
        return None, f"{DISABLE}=0 is set"
    try:
        return _find_or_compile()
    except Exception as e:     # noqa: BLE001 - whatever goes wrong here, training takes PyTorch's path
        return None, f"the C kernel could not be built: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _find_or_compile() -> tuple[ctypes.CDLL | None, str]:
    cc = shlex.split(os.environ.get("CC") or "") or [shutil.which("cc") or shutil.which("gcc") or ""]
    if not cc[0]:
        return None, "no C compiler found (cc, gcc or $CC)"
    name = Path(cc[0]).name
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, errors="replace",
                                 timeout=30).stdout
        source = b"\0".join((FOLDER / name).read_bytes() for name in SOURCES + HEADERS)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"the compiler {name} does not run: {e}"
    errors = []
    for variant in VARIANTS:
        flags = FLAGS + variant
        digest = hashlib.sha256(b"\0".join([source, " ".join(flags + LIBS).encode(), version.encode(),
                                            _cpu_features().encode()])).hexdigest()[:16]
        path = cache_dir() / f"kernels-{digest}.so"
        for attempt in ("cached", "fresh"):
            if attempt == "fresh" or not path.is_file():
                error = _compile(cc, flags, path)
                if error:
                    errors.append(error)
                    break
            try:
                return _declare(ctypes.CDLL(str(path))), f"{name} {' '.join(variant) or 'generic, one thread'}, {path}"
            except (OSError, AttributeError) as e:    # a broken cached file is compiled once more
                errors.append(f"{path} does not load: {e}")
                if attempt == "cached":
                    path.unlink(missing_ok=True)
    return None, errors[-1]


def _compile(cc: list[str], flags: tuple[str, ...], path: Path) -> str:
    """Compiles SOURCES to `path` (atomically); '' on success, else one line saying why not."""
    name = Path(cc[0]).name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
    except OSError as e:
        return f"the cache folder {path.parent} cannot be written: {e.strerror or e}"
    try:
        done = subprocess.run([*cc, *flags, "-o", tmp, *[str(FOLDER / name) for name in SOURCES], *LIBS],
                              capture_output=True, text=True,
                              errors="replace", timeout=COMPILE_SECONDS)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return f"{name} failed: {lines[-1] if lines else f'exit status {done.returncode}'}"
        if os.path.getsize(tmp) == 0:
            return f"{name} wrote nothing"
        os.replace(tmp, path)
        return ""
    except (OSError, subprocess.SubprocessError) as e:
        return f"{name} did not finish: {e}"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """The C signatures (native/*.c): every pointer a tensor's data_ptr()."""
    ptr, size, flag = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.score_forward.argtypes = [flag, *[ptr] * 6, *[size] * 4, flag]
    lib.score_keys_exp.argtypes = [flag, ptr, ptr, size, flag]
    lib.score_backward.argtypes = [flag, *[ptr] * 9, *[size] * 4, flag, flag]
    lib.context_forward.argtypes = [flag, flag, *[ptr] * 3, *[size] * 3, flag]
    lib.context_backward.argtypes = [flag, flag, *[ptr] * 5, *[size] * 3, flag]
    for fn in (lib.score_forward, lib.score_keys_exp, lib.score_backward, lib.context_forward, lib.context_backward):
        fn.restype = flag
    lib.lstm_cell_forward.argtypes = [flag, *[ptr] * 6, size, ptr, size, size, flag]
    lib.lstm_cell_backward.argtypes = [flag, *[ptr] * 5, size, ptr, ptr, size, ptr, size, size, size, flag]
    lib.transpose_f32.argtypes = [ptr, ptr, size, size, flag]
    lib.nll_forward.argtypes = [flag, *[ptr] * 4, size, size, flag]
    lib.nll_backward.argtypes = [flag, *[ptr] * 5, size, size, flag]
    lib.nll_forward.restype = lib.nll_backward.restype = flag
    lib.bn_relu_forward.argtypes = [*[ptr] * 3, ctypes.c_double, *[ptr] * 6, size, size, flag]
    lib.bn_relu_backward.argtypes = [*[ptr] * 9, size, size, flag]
    lib.bn_relu_forward.restype = lib.bn_relu_backward.restype = flag
    lib.lstm_cell_forward.restype = lib.lstm_cell_backward.restype = lib.transpose_f32.restype = None
    return lib
