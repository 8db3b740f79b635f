"""A normal (non-editable) install carries the shipped checkpoints, and finds them."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from caption import checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_the_shipped_checkpoints(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    shipped = sorted(p.name for p in (ROOT / "checkpoints").glob("*.pt"))
    if not shipped:
        pytest.skip("no shipped checkpoints in this tree")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = tmp_path.glob("caption-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(Path(n).name for n in names if n.startswith("caption/shipped/")) == shipped


def test_an_installed_package_finds_its_own_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPTION_CHECKPOINTS", raising=False)
    in_tree = checkpoint.default_checkpoint("scenes-soft.pt")
    assert in_tree == ROOT / "checkpoints" / "scenes-soft.pt"
    # outside a source tree (no checkpoints/ beside the package) the package's shipped/ copy is used
    assert checkpoint.default_checkpoint("none.pt") == ROOT / "caption" / "shipped" / "none.pt"
    assert (ROOT / "caption" / "shipped" / "scenes-soft.pt").resolve() == in_tree.resolve()
    monkeypatch.setenv("CAPTION_CHECKPOINTS", str(tmp_path))
    assert checkpoint.default_checkpoint("x.pt") == tmp_path / "x.pt"
