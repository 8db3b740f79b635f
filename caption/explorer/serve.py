"""`caption serve`: the explorer page with an upload form, on a small local server. Two routes:
GET / (the page, built once) and POST /caption (the raw bytes of one image in the body; the reply
is its record, as `caption explore` would put it in a page). Nothing else: no file is served,
no directory listed. Built on the standard library's http.server, so live mode needs nothing
more than the explorer does; it listens on 127.0.0.1 unless told otherwise.

Safety: an upload's Content-Length is checked before one byte of the body is read (none: 411,
over the limit: 413) and never more than that is read; a few uploads are taken at a time (503
past that) so memory stays bounded; the image goes through the project's reader (its header
checked before any pixel is decoded, 64 megapixels at most) from a file in a private folder; the
models decode one request at a time (a lock); a bad upload is one line in a 400 reply and the
server goes on; a client that stalls is dropped after TIMEOUT seconds."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import CaptionError, InputError, OptionError
from ..fileio import shown
from ..safe_read import clip
from ..search import HARD_MODES, DecodeOptions
from .build import build
from .page import render

MB = 1 << 20
MAX_UPLOAD_MB = 256      # the --max-upload ceiling: a 64-megapixel RGB bitmap is 192 MB
PENDING = 4              # uploads held at once (read or waiting for the models); past this 503
TIMEOUT = 30             # seconds a client may stall mid-request before its connection is dropped


class Live:
    """The loaded models, the page, and `caption(body, name) -> record`; safe to call from threads."""

    def __init__(self, models: list[tuple[str, object]], options: DecodeOptions = DecodeOptions(),
                 hard_modes: tuple[str, ...] = HARD_MODES, title: str = "caption serve",
                 max_upload: int = 20 * MB):
        if not 0 < max_upload <= MAX_UPLOAD_MB * MB:
            raise OptionError("max_upload", f"must be more than 0 and at most {MAX_UPLOAD_MB} MB, "
                                            f"got {max_upload / MB:g} MB")
        self.models, self.options, self.hard_modes, self.title = models, options, hard_modes, title
        self.max_upload = max_upload
        data, _ = build([], models, options, hard_modes, title)       # the runs, no image yet
        data["live"] = {"max_upload": max_upload}
        self.runs = data["runs"]
        self.page = render(data, extra=("live.js",), connect=True).encode("utf-8")
        self.slots = threading.BoundedSemaphore(PENDING)
        self._lock = threading.Lock()          # one decoding at a time: the models are shared
        self._folder = tempfile.mkdtemp(prefix="caption-serve-")   # mode 0700: only this user

    def caption(self, body: bytes, name: str = "upload") -> dict:
        """The record of one uploaded image (its bytes); InputError naming `name` when it cannot be read."""
        fd, path = tempfile.mkstemp(dir=self._folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            problems: list[str] = []
            with self._lock:
                data, bad = build([{"name": name, "source": path}], self.models, self.options,
                                  self.hard_modes, self.title, warn=problems.append)
        finally:
            os.unlink(path)
        if bad:       # the reader names the file: name the upload instead of the temporary file
            raise InputError(problems[0].replace(shown(path), name) if problems else f"{name}: not a readable image")
        return data["images"][0]

    def close(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


def upload_name(header: str | None) -> str:
    """The file name the page sends (URL-encoded in X-Image-Name), its last part only, one clipped line."""
    name = Path(unquote(header or "").replace("\\", "/")).name.strip()
    return clip(shown(name), 120) if name else "upload"


class Handler(BaseHTTPRequestHandler):
    server_version = "caption-serve"
    sys_version = ""                     # no Python version in the Server header
    timeout = TIMEOUT

    def _known_host(self) -> bool:
        """A request must name this server as its host (DNS rebinding: a site that points its own
        name at 127.0.0.1 sends its name in Host, and is refused)."""
        if not is_loopback(self.server.bound_host):   # listening on purpose beyond this machine
            return True
        try:
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        except ValueError:                             # a malformed Host (an unclosed "[")
            return False
        return is_loopback(host)

    def do_GET(self):
        if not self._known_host():
            return self._error(421, "this server answers to its own address only (use the URL it printed)")
        path = self._path()
        if path == "/":
            self._send(200, self.server.live.page, "text/html; charset=utf-8")
        elif path == "/caption":
            self._error(405, "send the image with POST", allow="POST")
        else:
            self._error(404, "not found: this server has the page (/) and POST /caption only")

    def do_POST(self):
        if not self._known_host():
            return self._error(421, "this server answers to its own address only (use the URL it printed)")
        path = self._path()
        if path != "/caption":
            return self._error(405, "the page is read with GET", allow="GET") if path == "/" else \
                self._error(404, "not found: send images to POST /caption")
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
            return self._error(403, "uploads are taken from this server's own page only")
        live = self.server.live
        length = self._length(live.max_upload)
        if length is None:
            return
        if not live.slots.acquire(blocking=False):
            return self._error(503, "busy: too many uploads at once; try again")
        try:
            body = self.rfile.read(length)
            if len(body) < length:
                return self._error(400, f"the upload ended after {len(body):,} of {length:,} bytes")
            record = live.caption(body, upload_name(self.headers.get("X-Image-Name")))
        except CaptionError as e:
            return self._error(400, clip(str(e).replace("\n", " "), 300))
        except (ConnectionError, TimeoutError):
            raise                                 # the client went away: handle_one_request drops it
        except Exception as e:                    # a reader or model failure: one line, keep serving
            self.server.log(f"caption serve: an upload failed ({type(e).__name__}: {clip(str(e), 200)})")
            return self._error(500, f"the image could not be captioned ({type(e).__name__})")
        finally:
            live.slots.release()
        self._send(200, json.dumps({"record": record}, allow_nan=False).encode("utf-8"), "application/json")

    def _length(self, limit: int) -> int | None:
        """The body's length from Content-Length, or None once a refusal is sent (no body read)."""
        if self.headers.get("Transfer-Encoding") is not None:
            self._error(411, "send the image with a Content-Length (chunked uploads are not taken)")
            return None
        values = self.headers.get_all("Content-Length") or []
        if not values:
            self._error(411, "send the image with a Content-Length")
            return None
        text = values[0].strip()
        if len(set(values)) > 1 or not (text.isascii() and text.isdigit()):
            self._error(400, f"Content-Length must be one number of bytes, got {clip(', '.join(values), 60)!r}")
            return None
        length = int(text)
        if length > limit:
            self._error(413, f"the upload is {length / MB:,.1f} MB; this server takes at most {limit / MB:g} MB "
                             f"(caption serve --max-upload)")
            return None
        if length == 0:
            self._error(400, "the upload is empty")
            return None
        return length

    def _path(self) -> str:
        return urlsplit(self.path).path

    def _error(self, code: int, message: str, allow: str | None = None) -> None:
        body = json.dumps({"error": message}).encode("utf-8")
        self._send(code, body, "application/json", {"Allow": allow} if allow else {})

    def _send(self, code: int, body: bytes, kind: str, headers: dict | None = None) -> None:
        if code >= 400:
            self.close_connection = True        # a body may be left unread: never reuse the connection
        self.send_response(code)
        for k, v in {"Content-Type": kind, "Content-Length": str(len(body)), "Cache-Control": "no-store",
                     "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                     "Referrer-Policy": "no-referrer", **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self):
        self._error(405, f"{self.command} is not taken here: GET / and POST /caption only", allow="GET, POST")

    do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def log_message(self, format, *args):       # one line per request, to the server's log only
        self.server.log(shown(f"{self.address_string()} {format % args}"))


class Server(ThreadingHTTPServer):
    daemon_threads = True        # a stalled client never holds up Ctrl-C

    def __init__(self, address, live: Live, log: Callable[[str], None] | None):
        self.live, self._log = live, log
        super().__init__(address, Handler)

    def log(self, line: str) -> None:
        if self._log:
            self._log(line)

    def handle_error(self, request, client_address):    # one line, never socketserver's traceback
        e = sys.exc_info()[1]
        self.log(f"caption serve: a connection from {client_address[0]} failed ({type(e).__name__})")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(live: Live, host: str = "127.0.0.1", port: int = 8000,
                log: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None) -> Server:
    """The server bound (port 0: any free port; `.url` says which), not yet serving: call
    serve_forever(). log: one line per request (None: quiet); warn: told when host is not loopback."""
    if not 0 <= port <= 65535:
        raise OptionError("port", f"must be from 0 to 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    cls = type("Server", (Server,), {"address_family": family})
    try:
        server = cls((host, port), live, log)
    except (OSError, OverflowError) as e:
        raise InputError(f"cannot listen on {clip(shown(host), 80)} port {port} "
                         f"({getattr(e, 'strerror', None) or e})") from None
    server.bound_host = host.strip("[]")
    if warn and not is_loopback(host):
        warn(f"listening on {shown(host)}, not the loopback address: anyone who can reach this "
             f"machine can open the page and send it images")
    return server
