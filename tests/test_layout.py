"""The package's structure, as DEVELOPERS.md and the README state it: the public API on top (no
library layer imports it), functions that fit on a screen, and a README layout table that names
every module there is and nothing that is not."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "caption"
LIBRARY = ("training", "metrics", "image", "text", "data", "kernels", "explorer", "viz")
MAX_FUNCTION_LINES = 80


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imported(path: Path, source: str | None = None) -> set[str]:
    """The caption modules `path` (or `source` placed there) imports, as dotted names, relative
    imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            names.add(stem)
            names.update(f"{stem}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "caption" or n.startswith("caption.")}


def test_no_library_layer_imports_the_public_api():
    climbing = [f"{p.relative_to(ROOT)} imports {n}" for p in modules()
                if p.relative_to(PACKAGE).parts[0] in LIBRARY
                for n in imported(p) if n == "caption.api" or n.startswith("caption.api.")]
    assert climbing == []


def test_the_import_checker_resolves_relative_imports():
    names = imported(PACKAGE / "training" / "loop.py", "from ..api import CaptionModel\nfrom . import rng\n"
                     "import caption.api\nfrom .. import checkpoint\n")
    assert names == {"caption.api", "caption.api.CaptionModel", "caption.training", "caption.training.rng",
                     "caption", "caption.checkpoint"}


def test_every_function_fits_on_a_screen():
    long = []
    for p in modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def layout_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `caption/")]


def named_in_layout() -> set[Path]:
    """Every module the layout table names: `caption/x.py` in its first column, and `name.py` files
    in the second column of a folder's row."""
    named = set()
    for row in layout_rows():
        first, second = row.split("|")[1:3]
        paths = re.findall(r"`([^`]+)`", first)
        folder = next((PACKAGE.parent / p for p in paths if p.endswith("/")), None)
        for p in paths:
            base = PACKAGE.parent / p if p.startswith("caption/") else PACKAGE / p
            if p.endswith(".py"):
                named.add(base)
        if folder is not None:
            named.update(folder / m for m in re.findall(r"`([\w/]+\.py)`", second))
    return named


def test_the_readme_layout_names_every_module_and_only_modules_that_exist():
    named = named_in_layout()
    missing = sorted(str(p.relative_to(ROOT)) for p in named if not p.is_file())
    assert missing == [], "the README's layout names files that do not exist"
    unnamed = sorted(str(p.relative_to(ROOT)) for p in modules()
                     if p not in named and p.name not in ("__init__.py", "__main__.py")
                     and p.relative_to(PACKAGE).parts[0] != "cli")
    assert unnamed == [], "modules the README's layout does not name"
