"""The explorer page: one HTML file that needs nothing else. The viewer's script and style are
read from static/ and inlined; the data goes in <script type="application/json"
id="attention-data"> (schema.md), where other tools can read it; pictures are data URIs. Nothing
in the page names another file or host, so opening it makes no network request."""
from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..fileio import atomic_write

STATIC = Path(__file__).with_name("static")
SCRIPTS = ("common.js", "image.js", "text.js", "main.js")


def _inline(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def data_json(data: dict) -> str:
    """JSON safe inside a <script> element: "<" escaped, so no "</script>" or "<!--" can end it."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def render(data: dict, extra: tuple[str, ...] = (), connect: bool = False) -> str:
    """The whole page as text. extra: more static scripts inlined after the viewer (the live
    page's upload form); connect: the page may send requests to its own server (caption serve)."""
    scripts = "\n".join(_inline(name) for name in (*SCRIPTS, *extra))
    connect_src = " connect-src 'self';" if connect else ""
    title = html.escape(data.get("title") or "caption explore")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            # no request of any kind: the policy forbids every source but the page's own inline parts
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            f'script-src \'unsafe-inline\'; style-src \'unsafe-inline\'; img-src data: blob:;{connect_src}">\n'
            f'<title>{title}</title>\n<style>\n{_inline("explorer.css")}\n{_inline("text.css")}\n</style>\n</head>\n<body>\n'
            f'<div id="app"><noscript>This page needs JavaScript to show the maps; the data is in '
            f'the attention-data element of its source.</noscript></div>\n'
            f'<script type="application/json" id="attention-data">{data_json(data)}</script>\n'
            f'<script>\n{scripts}\n</script>\n</body>\n</html>\n')


def write_page(out: str | os.PathLike, data: dict, inputs: Iterable = ()) -> Path:
    """Write the page atomically, never over an input or a file that is not an HTML page."""
    text = render(data)
    with atomic_write(out, "page", inputs) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(out)


def read_data(text: str) -> dict:
    """The data a page embeds (the inverse of render's attention-data element)."""
    start = text.index('id="attention-data">') + len('id="attention-data">')
    return json.loads(text[start:text.index("</script>", start)])


def notebook_html(data: dict, height: int = 640) -> str:
    """The page in an iframe, for Jupyter's _repr_html_: its scripts and styles stay inside."""
    return (f'<iframe srcdoc="{html.escape(render(data), quote=True)}" style="width:100%;'
            f'height:{height}px;border:1px solid #ddd" sandbox="allow-scripts allow-downloads"></iframe>')
