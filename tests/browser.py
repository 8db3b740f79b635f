"""Real headless Chromium for the explorer's tests, through Playwright.

Playwright cannot download its own browsers here, so it drives the system's Chromium (Debian's
`chromium` package; .ci/run installs it) through `executable_path`. Where no Chromium exists, or
Playwright is not installed, every test that asks for `browser` skips with one reason.

    from browser import missing, open_page   # the `browser` fixture comes from tests/conftest.py
    pytestmark = pytest.mark.browser
    if missing():                                        # one line in the summary, not one a test
        pytest.skip(missing(), allow_module_level=True)
"""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
NO_CHROMIUM = "no Chromium: apt-get install chromium"
NO_PLAYWRIGHT = "Playwright is not installed: pip install playwright (or pip install -e '.[dev]')"

# Set before the page's own scripts run: the Content-Security-Policy violations the page meets
# (a request the policy blocked never reaches Playwright's request events), and when the picture
# of an image is first drawn onto a canvas (the view is complete, not only its grey placeholder).
WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
const drawImage = CanvasRenderingContext2D.prototype.drawImage;
CanvasRenderingContext2D.prototype.drawImage = function (source, ...rest) {
  if (source instanceof HTMLImageElement && window.__pictureDrawn === undefined) window.__pictureDrawn = performance.now();
  return drawImage.call(this, source, ...rest);
};
"""

# The first image's view is drawn: every run's map canvas shows a word (or says the caption
# ended), and a picture has been drawn under the maps (the pictures are small JPEGs, decoded in the
# order their sections are built, the first image's first).
FIRST_DRAWN = """() => {
  const maps = document.querySelectorAll('#image-0 canvas.map');
  return maps.length > 0 && Array.from(maps).every((c) => c.dataset.t !== undefined) &&
         window.__pictureDrawn !== undefined;
}"""


def chromium_path() -> str | None:
    """The first Chromium of /usr/bin/chromium, /usr/bin/chromium-browser, $CHROMIUM that exists."""
    for path in (*CANDIDATES, os.environ.get("CHROMIUM", "")):
        found = shutil.which(path) if path else None
        if found:
            return found
    return None


def missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if chromium_path() is None:
        return NO_CHROMIUM
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return NO_PLAYWRIGHT
    return None


_launched: list = []     # [(playwright, browser)]: one per process, however many modules import the fixture


@pytest.fixture(scope="session")
def browser(request):
    """Headless Chromium, launched once per test session (Playwright's sync API runs one at a time)."""
    why = missing()
    if why:
        pytest.skip(why)
    if not _launched:
        from playwright.sync_api import sync_playwright
        pw = sync_playwright().start()
        _launched.append((pw, pw.chromium.launch(executable_path=chromium_path(), headless=True)))

        def stop():
            pw_, b = _launched.pop()
            b.close()
            pw_.stop()
        request.config.add_cleanup(stop)
    return _launched[0][1]


@contextmanager
def one_thread():
    """Decode on one torch thread: on a shared two-core machine, two threads fighting Chromium and
    other processes for the cores spin instead of working (a 100-image build: 1 s against 20 s)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Opened:
    """A page with everything it did recorded: requests (URLs), console errors, page errors."""
    page: object
    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0      # from goto until `wait` held (the first image drawn)

    def others(self) -> list[str]:
        """Every request but the page's own file."""
        return [u for u in self.requests if u != self.url]

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("window.__cspViolations")

    def close(self) -> None:
        self.page.context.close()


def open_page(browser, path: str | os.PathLike, wait: str | None = FIRST_DRAWN, size=(1400, 1000)) -> Opened:
    """Open a page from disk in a fresh context. Every request is routed: the page's own file is
    served, anything else is counted and aborted (the page must make none)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": size[0], "height": size[1]})
    context.set_default_timeout(5_000)        # a missing element fails in seconds, not Playwright's 30
    context.add_init_script(WATCH)
    page = context.new_page()
    url = Path(path).resolve().as_uri()
    opened = Opened(page, url)

    def route(r):
        opened.requests.append(r.request.url)
        if r.request.url == url:
            r.continue_()
        else:
            r.abort()
    page.route("**/*", route)
    page.on("console", lambda m: opened.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.page_errors.append(str(e)))
    start = time.perf_counter()
    page.goto(url)
    if wait:
        page.wait_for_function(wait, timeout=10_000)
    opened.seconds = time.perf_counter() - start
    return opened


def assert_clean(opened):
    """No request but the page's own file, no console error, no page error, no CSP violation.
    (Plain asserts here are not rewritten by pytest: each says what it found.)"""
    assert opened.requests == [opened.url], f"requests: {opened.requests}"
    assert opened.console_errors == [], f"console errors: {opened.console_errors}"
    assert opened.page_errors == [], f"page errors: {opened.page_errors}"
    violations = opened.csp_violations()
    assert violations == [], f"Content-Security-Policy violations: {violations}"
