"""`caption explore` at scale: the size of one report, the time to build it and the time to open it
in a browser.

Reports of built-in scenes (seed 7, as `caption explore --scenes`) by the shipped models, every run
with its 3 beams: 10 and 100 scenes by 3 runs (scenes-soft.pt, scenes-hard.pt in expected and
argmax mode), and 100 scenes by 4 runs (scenes-soft.pt and scenes-hard.pt in all three hard
modes). Build: caption.explore(...) writing the page, checkpoints loaded included. Open: real
headless Chromium through Playwright (tests/browser.py: the system's Chromium, every request
counted), from goto until the first image's maps and picture are drawn, the median of 3 fresh
pages; the page must make no request and log no error.

    python benchmarks/explore_size.py [--repeats 3] [--no-write]
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption.api import explore  # noqa: E402
from caption.checkpoint import default_checkpoint  # noqa: E402
from caption.explorer.page import read_data  # noqa: E402
from tests.browser import chromium_path, missing, open_page  # noqa: E402

SOFT, HARD = default_checkpoint("scenes-soft.pt"), default_checkpoint("scenes-hard.pt")
REPORTS = [(10, ("expected", "argmax")), (100, ("expected", "argmax")), (100, ("expected", "argmax", "sample"))]


def parts(data: dict) -> tuple[int, int]:
    """(bytes of the pictures' data URIs, bytes of the maps' base64) in the embedded data."""
    pictures = sum(len(im["image"] or "") for im in data["images"])
    maps = sum(len(b["maps"]) for im in data["images"] for run in im["runs"] for b in run["beams"])
    return pictures, maps


def open_times(browser, path: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        opened = open_page(browser, path)
        times.append(opened.seconds)
        bad = opened.others() + opened.console_errors + opened.page_errors + opened.csp_violations()
        opened.close()
        if bad:
            raise SystemExit(f"{path.name}: the page made a request or logged an error: {bad[:3]}")
    return times


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--repeats", type=int, default=3, help="fresh pages opened per report (default: 3)")
    args = parse(p)
    if missing():
        raise SystemExit(missing())
    from playwright.sync_api import sync_playwright
    rows = []
    with tempfile.TemporaryDirectory(prefix="caption-explore-") as root, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True)
        version = browser.version
        for scenes, modes in REPORTS:
            out = Path(root) / f"{scenes}x{len(modes) + 1}.html"
            t0 = time.perf_counter()
            explore(models=[SOFT, HARD], out=out, scenes=scenes, hard_modes=modes)
            built = time.perf_counter() - t0
            data = read_data(out.read_text(encoding="utf-8"))
            runs = len(data["runs"])
            pictures, maps = parts(data)
            times = open_times(browser, out, args.repeats)
            size = out.stat().st_size
            rows.append([f"{scenes} x {runs}", f"soft + hard ({', '.join(r['mode'] for r in data['runs'][1:])})",
                         f"{size / 1e6:.2f}", f"{size / scenes / runs / 1e3:.1f}", f"{pictures / 1e6:.2f}",
                         f"{maps / 1e6:.2f}", f"{built:.1f}", f"{statistics.median(times):.2f}",
                         " / ".join(f"{t:.2f}" for t in times)])
            print(rows[-1], flush=True)
        browser.close()
    body = (f"Built-in scenes (seed 7) by scenes-soft.pt and scenes-hard.pt, beam 3, every beam's maps "
            f"(14 x 14) in the page; {args.threads} torch threads; Chromium {version}, headless. Maps are "
            "uint8 scaled to each map's maximum, base64 in the page: float32 would take 4 times their room. "
            "Open: from goto until the first image's maps and picture are drawn; the other images are built "
            "as they scroll into view.\n\n"
            + table(["images x runs", "runs", "page MB", "kB per image-run",
                     "pictures MB", "maps MB", "build s", "open s (median)", f"open s ({args.repeats} tries)"], rows)
            + "\n\nEach page makes no request (every request routed and counted) and logs no error. The "
            "pictures are 224 px JPEGs, one per image whatever the number of runs; each run adds its maps, "
            "196 bytes (261 in base64) a word and beam; the rest is the words, scales and per-word figures. Build times vary on this shared 2-core machine.\n")
    publish("explore-size", "Explore: report size, build and open time", body, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
