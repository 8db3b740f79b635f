"""caption serve: the page, good and bad uploads, the size limit enforced before any body byte is
read, two clients at once, nothing but the two routes, loopback by default, Ctrl-C."""
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
from PIL import Image

from caption.api import load
from caption.checkpoint import default_checkpoint
from caption.cli import build_parser, main
from caption.data.scenes import scene_set
from caption.explorer.record import picture
from caption.explorer.serve import Live, make_server
from caption.search import DecodeOptions

LIMIT = 200_000      # bytes: the scenes' PNGs are a few kB
OPTIONS = DecodeOptions(beam_size=2, seed=0)


@pytest.fixture(scope="module")
def model():
    return load(default_checkpoint("scenes-soft.pt"), "cpu")


@pytest.fixture(scope="module")
def server(model):
    live = Live([("scenes-soft.pt", model)], OPTIONS, max_upload=LIMIT)
    srv = make_server(live, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    live.close()


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    out = []
    for i, img in enumerate(scene_set(2, "test").images):
        p = folder / f"scene{i}.png"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(p)
        out.append(p)
    return out


def request(srv, method, path, body=None, headers=None, length=True):
    """(status, parsed JSON or text, headers); length=False sends no Content-Length."""
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=20)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in {**({"Content-Length": str(len(body or b""))} if length and body is not None else {}),
                     **(headers or {})}.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        reply = conn.getresponse()
        raw = reply.read()
        kind = reply.getheader("Content-Type", "")
        return reply.status, json.loads(raw) if kind == "application/json" else raw.decode(), reply
    finally:
        conn.close()


def post(srv, data: bytes, name=None):
    return request(srv, "POST", "/caption", data, {"X-Image-Name": name} if name else None)


def test_the_page_has_the_runs_the_limit_the_policy_and_the_upload_form(server):
    status, page, reply = request(server, "GET", "/")
    assert status == 200 and reply.getheader("Content-Type") == "text/html; charset=utf-8"
    assert "connect-src 'self'" in page and "default-src 'none'" in page
    assert "CX.addImage(json.record)" in page and 'id: "live-error"' in page      # live.js, inlined
    from caption.explorer.page import read_data
    data = read_data(page)
    assert data["images"] == [] and [r["label"] for r in data["runs"]] == ["scenes-soft.pt"]
    assert data["live"] == {"max_upload": LIMIT}


def test_an_upload_gets_the_record_of_the_models_caption(server, model, pngs):
    status, body, _ = post(server, pngs[0].read_bytes(), "scene%200.png")
    assert status == 200
    record = body["record"]
    assert record["name"] == "scene 0.png"
    assert record["runs"][0]["beams"][0]["words"] == model.caption(str(pngs[0]), options=OPTIONS).words
    assert record["image"] == picture(str(pngs[0]), False)
    assert len(record["runs"][0]["beams"]) == 2


@pytest.mark.parametrize("data, problem", [
    (b"this is not an image at all\n", "not a readable image (UnidentifiedImageError)"),
    ("truncated", "not a readable image (OSError)"),
])
def test_a_bad_upload_is_one_line_and_the_server_goes_on(server, model, pngs, data, problem):
    if data == "truncated":
        data = pngs[1].read_bytes()[:600]
    status, body, _ = post(server, data, "holiday.png")
    assert status == 400
    assert body == {"error": f"holiday.png: {problem}"}
    status, body, _ = post(server, pngs[1].read_bytes())
    assert status == 200 and body["record"]["name"] == "upload"
    assert body["record"]["runs"][0]["beams"][0]["words"] == model.caption(str(pngs[1]), options=OPTIONS).words


def test_an_oversized_upload_is_refused_before_its_body_is_read(server, pngs):
    # only the headers are sent: the reply must come without the server waiting for the body
    status, body, _ = request(server, "POST", "/caption", headers={"Content-Length": str(LIMIT + 1)})
    assert status == 413
    assert body["error"].startswith("the upload is 0.2 MB; this server takes at most 0.190735 MB")
    status, body, _ = request(server, "POST", "/caption", b"x", length=False)
    assert status == 411 and body == {"error": "send the image with a Content-Length"}
    status, body, _ = request(server, "POST", "/caption", headers={"Content-Length": "12abc"})
    assert status == 400 and "Content-Length must be one number" in body["error"]
    status, body, _ = request(server, "POST", "/caption", headers={"Transfer-Encoding": "chunked"})
    assert status == 411
    assert post(server, pngs[0].read_bytes())[0] == 200


def test_a_short_or_stalled_upload_is_dropped_and_the_server_goes_on(server, pngs, monkeypatch):
    from caption.explorer import serve
    with socket.create_connection(server.server_address[:2], timeout=20) as s:
        s.sendall(b"POST /caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789")
        s.shutdown(socket.SHUT_WR)                 # ten bytes of a hundred, then the end
        reply = s.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.0 400 ") and b'"the upload ended after 10 of 100 bytes"' in reply
    monkeypatch.setattr(serve.Handler, "timeout", 0.5)
    with socket.create_connection(server.server_address[:2], timeout=20) as s:
        s.sendall(b"POST /caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123")   # and nothing more
        assert s.makefile("rb").read() == b""    # dropped after the timeout, no reply, no hang
    assert post(server, pngs[0].read_bytes())[0] == 200


def test_a_large_image_is_refused_on_its_header(server):
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")        # 81 megapixels, a few kB of file
    status, body, _ = post(server, buf.getvalue(), "bomb.png")
    assert status == 400 and body["error"].startswith("bomb.png: 9000x9000 pixels")


def test_two_clients_at_once_each_get_their_own_record(server, model, pngs):
    expected = [model.caption(str(p), options=OPTIONS).words for p in pngs]
    assert expected[0] != expected[1]
    start, replies = threading.Barrier(2), [None, None]

    def client(i):
        start.wait()
        replies[i] = post(server, pngs[i].read_bytes(), pngs[i].name)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i, (status, body, _) in enumerate(replies):
        assert status == 200
        assert body["record"]["name"] == pngs[i].name
        assert body["record"]["runs"][0]["beams"][0]["words"] == expected[i]


@pytest.mark.parametrize("path", ["/etc/passwd", "/../../../../etc/passwd", "//etc/passwd", "/../",
                                  "/index.html", "/caption/..%2f..%2fetc%2fpasswd", "/static/live.js"])
def test_nothing_but_the_two_routes(server, path):
    status, body, _ = request(server, "GET", path)
    assert status == 404 and "root:" not in json.dumps(body)
    assert list(body) == ["error"]


def test_other_methods_are_refused(server):
    status, body, reply = request(server, "GET", "/caption")
    assert status == 405 and reply.getheader("Allow") == "POST"
    assert request(server, "POST", "/", b"x")[0] == 405
    assert request(server, "DELETE", "/")[0] == 405
    assert request(server, "PUT", "/caption", b"x")[0] == 405


def test_an_upload_from_another_site_is_refused(server, pngs):
    status, body, _ = request(server, "POST", "/caption", pngs[0].read_bytes(), {"Origin": "http://evil.example"})
    assert status == 403


def test_loopback_by_default_and_a_warning_otherwise(model):
    live = Live([("m", model)], OPTIONS)
    try:
        warned = []
        with make_server(live, port=0, warn=warned.append) as srv:
            assert srv.server_address[0] == "127.0.0.1" and srv.server_address[1] > 0
            assert srv.url == f"http://127.0.0.1:{srv.server_address[1]}/"
        assert warned == []
        with make_server(live, "0.0.0.0", 0, warn=warned.append):
            pass
        assert len(warned) == 1 and warned[0].startswith("listening on 0.0.0.0, not the loopback address")
    finally:
        live.close()
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.max_upload) == ("127.0.0.1", 8000, 20)


def test_bad_flags_are_one_line(capsys):
    assert main(["serve", "--port", "70000", "--model", "nope.pt"]) == 1
    assert capsys.readouterr().err == "caption: error: --port must be from 0 to 65535, got 70000\n"
    assert main(["serve", "--max-upload", "0"]) == 1
    assert capsys.readouterr().err == "caption: error: --max-upload must be more than 0 and at most 256 (MB), got 0\n"


def test_the_command_prints_its_url_serves_and_stops_on_ctrl_c(model_path):
    proc = subprocess.Popen([sys.executable, "-m", "caption", "serve", "--model", str(model_path), "--port", "0",
                             "--verbose"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:") and "tiny.pt" in line, line + proc.stderr.read()
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    lines = err.splitlines()
    assert lines[-1] == "caption: interrupted" and '"GET / HTTP/1.1" 200' in lines[0] and len(lines) == 2


@pytest.mark.browser
def test_the_live_page_in_chromium_uploads_shows_errors_and_goes_on(server, model, pngs, browser):
    context = browser.new_context()
    page = context.new_page()
    requests, console = [], []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    try:
        page.goto(server.url)
        page.set_input_files("#live-file", files=[{"name": "first.png", "mimeType": "image/png",
                                                   "buffer": pngs[0].read_bytes()}])
        page.wait_for_selector("#image-0 .word", timeout=20_000)
        words = page.evaluate("CX.imageState(0).runs[0].words")
        assert words == model.caption(str(pngs[0]), options=OPTIONS).words
        assert page.inner_text("#image-0 h2") == "first.png"
        page.set_input_files("#live-file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"hello"}])
        page.wait_for_selector("#live-error:not([hidden])", timeout=20_000)
        assert page.inner_text("#live-error") == "notes.png: not a readable image (UnidentifiedImageError)"
        sent = len(requests)
        page.set_input_files("#live-file", files=[{"name": "huge.png", "mimeType": "image/png",
                                                   "buffer": b"\0" * (LIMIT + 1)}])
        page.wait_for_function("document.getElementById('live-error').textContent.startsWith('huge.png')")
        assert "more than the 0.19 MB this server takes" in page.inner_text("#live-error")
        assert len(requests) == sent                                    # refused before sending
        page.set_input_files("#live-file", files=[{"name": "second.png", "mimeType": "image/png",
                                                   "buffer": pngs[1].read_bytes()}])
        page.wait_for_selector("#image-1 .word", timeout=20_000)
        assert page.is_hidden("#live-error")
        assert page.evaluate("CX.imageState(1).runs[0].words") == model.caption(str(pngs[1]), options=OPTIONS).words
        assert page.evaluate("document.querySelector('#images section').id") == "image-1"   # newest first
        assert page.inner_text("header .summary").startswith("2 images, 1 model run")
        assert [m for m, _ in requests] == ["GET", "POST", "POST", "POST"]
        assert all(u.startswith(server.url) for _, u in requests)
        assert [c for c in console if "status of 400" not in c] == []  # Chromium logs the 400 itself
    finally:
        context.close()


def test_a_page_that_rebinds_its_name_to_this_machine_is_refused(server):
    """DNS rebinding: a site pointing its own name at 127.0.0.1 sends that name as Host (and as
    Origin, so the origin check alone passes): refused, for the page and for uploads."""
    for method, path in (("GET", "/"), ("POST", "/caption")):
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=20)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"attacker.example:{server.server_address[1]}")
            conn.putheader("Origin", f"http://attacker.example:{server.server_address[1]}")
            conn.putheader("Content-Length", "0")
            conn.endheaders()
            reply = conn.getresponse()
            assert reply.status == 421 and b"own address" in reply.read()
        finally:
            conn.close()
    assert request(server, "GET", "/")[0] == 200          # its own address still works
