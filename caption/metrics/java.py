"""The Java processes coco-caption needs (Stanford's PTB tokenizer, METEOR), each under a time
limit: a `java` on PATH that fails to run, hangs, or dies mid-way is one reason string (the caller
warns in one line and falls back), never a traceback or a hang after hours of decoding.

Each process starts in a session of its own, so that a timeout ends it with everything it started
(a wrapper script's children too, which would otherwise hold its pipes open). The limits are module
constants so that tests can lower them: a floor (the JVM's start, METEOR's paraphrase tables) plus a
time per character of input, far slower than either tool runs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable

from ..safe_read import clip

JAVA_CHECK_SECONDS = 30.0          # `java -version`: a cold JVM on a busy machine takes a few seconds
PTB_SECONDS = 120.0                # the PTB tokenizer: floor ...
PTB_CHARS_PER_SECOND = 50_000      # ... plus this (it tokenizes megabytes a second)
METEOR_SECONDS = 300.0             # METEOR: floor (loading its tables: BENCHMARKS.md, pilots) ...
METEOR_CHARS_PER_SECOND = 10_000   # ... plus this per character of the results

_CHECKED: dict[str, str | None] = {}    # java's path -> None when it runs, else why not


class JavaFailed(Exception):
    """A Java tool did not give its answer; str(e) says why, for one line."""


def java_problem() -> str | None:
    """None when `java -version` runs and succeeds within JAVA_CHECK_SECONDS, else why not (one
    phrase). Asked once per java binary a process sees (PATH may change, as in tests)."""
    path = shutil.which("java")
    if path is None:
        return "java not found"
    if path not in _CHECKED:
        try:
            code, _, err = run_limited([path, "-version"], JAVA_CHECK_SECONDS)
            _CHECKED[path] = None if code == 0 else f"java ({clip(path, 80)}) does not run: 'java -version' " \
                                                    f"exited with status {code}{last_line(err)}"
        except JavaFailed as e:
            _CHECKED[path] = f"java ({clip(path, 80)}) does not run: {e}"
    return _CHECKED[path]


def _secs(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def last_line(err: bytes) -> str:
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return f" ({clip(lines[-1], 100)})" if lines else ""


def run_limited(cmd: list[str], seconds: float, cwd: str | None = None) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr) of `cmd`; JavaFailed when it cannot start or runs past
    `seconds` (then it is killed with every process it started)."""
    try:
        p = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        raise JavaFailed(f"it cannot be started ({e.strerror})") from None
    try:
        out, err = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        end(p)
        raise JavaFailed(f"no answer within {_secs(seconds)}") from None
    except BaseException:           # Ctrl-C: the Java process goes too
        end(p)
        raise
    return p.returncode, out, err


def end(p: subprocess.Popen, close: bool = True) -> None:
    """Kill `p`'s process group and reap it. `close=False` leaves its pipes open: another thread
    may be blocked on them (closing a buffered pipe under a reader blocks); killing the writers
    gives that reader its end of file instead."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            p.kill()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    if close:
        for f in (p.stdin, p.stdout, p.stderr):
            try:
                if f:
                    f.close()
            except OSError:
                pass


def meteor_score(gts: dict, res: dict, warn: Callable[[str], None]) -> float | None:
    """pycocoevalcap's METEOR (0-1) of tokenized references `gts` and candidates `res`, run by its
    own compute_score against a Java process we start, under a watchdog: None, after one `warn`
    line, when Java fails or runs past its limit (the process is then killed)."""
    from pycocoevalcap.meteor import meteor as m

    class Scorer(m.Meteor):
        def __init__(self, process):      # pycocoevalcap's starts java outside a session of its own
            self.meteor_p, self.lock = process, threading.Lock()

        def __del__(self):                # its own blocks for ever on a lock a dead process left held
            pass

    # references and the candidate go to Java as one line split at " ||| "; one inside a caption
    # would shift every field after it
    gts = {k: [c.replace("|||", " ") for c in v] for k, v in gts.items()}
    chars = sum(len(c) for v in gts.values() for c in v) + sum(len(c) for v in res.values() for c in v)
    seconds = METEOR_SECONDS + chars / METEOR_CHARS_PER_SECOND
    try:
        p = subprocess.Popen(["java", "-jar", "-Xmx2G", m.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"],
                             cwd=os.path.dirname(os.path.abspath(m.__file__)), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        warn(f"METEOR left out: java cannot be started ({e.strerror})")
        return None
    box: dict = {}

    def work():
        try:
            box["score"] = float(Scorer(p).compute_score(gts, res)[0])
        except Exception as e:          # a dead pipe, an empty line where a number should be
            box["error"] = e
    thread = threading.Thread(target=work, name="meteor", daemon=True)
    thread.start()
    try:
        thread.join(seconds)
        if thread.is_alive():
            warn(f"METEOR left out: its Java process gave no answer within {_secs(seconds)} and was ended")
            return None
        if "error" in box:
            try:        # a closed pipe comes a moment before the exit status
                code = p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
            why = f"it exited with status {code}" if code is not None else \
                f"{type(box['error']).__name__}: {clip(box['error'], 80)}"
            warn(f"METEOR left out: its Java process failed ({why})")
            return None
        return box["score"]
    finally:
        end(p, close=False)
        thread.join(10)
        if not thread.is_alive():
            end(p)
