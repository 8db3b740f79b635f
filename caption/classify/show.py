"""The classifier's attention per token: colours in a terminal, and a page in the explorer's look.

Each token is shaded by its weight over the text's largest (the largest is full colour), so that a
long review's small weights stay visible; the numbers themselves are in the page's tooltips and data.
The page is one HTML file with no script and no request of its own; its data (`"kind": "classify"`,
caption/explorer/schema.md) is in the attention-data element, as the explorer's.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

from .. import __version__
from ..explorer.page import STATIC, data_json
from ..fileio import atomic_write

# the explorer's accent (#d64545) as shades of a 256-colour terminal, light to strong
SHADES = (231, 224, 217, 210, 203, 196)


def shade(weight: float, top: float) -> int:
    """0 .. len(SHADES) - 1: the weight's share of the largest."""
    share = weight / top if top > 0 else 0.0
    return min(len(SHADES) - 1, int(share * len(SHADES)))


def terminal(tokens: list[str], alpha: list[float], colour: bool = True) -> str:
    """The tokens, each on a background as strong as its weight (ANSI 256 colours); without colour,
    the tokens whose weight is at least half the largest in [brackets]. A control character in a
    token is written as its escape: a text never writes to the terminal itself."""
    tokens = [t if t.isprintable() else repr(t)[1:-1] for t in tokens]
    top = max(alpha, default=0.0)
    if not colour:
        return " ".join(f"[{t}]" if top > 0 and a >= top / 2 else t for t, a in zip(tokens, alpha))
    return " ".join(f"\x1b[48;5;{SHADES[shade(a, top)]}m\x1b[38;5;16m{t}\x1b[0m" for t, a in zip(tokens, alpha))


def record(text: str, tokens: list[str], alpha: list[float], probs: list[float], labels: tuple,
           label: str | None = None, deciding: tuple | None = None) -> dict:
    """One text as the page's data holds it."""
    best = max(range(len(probs)), key=probs.__getitem__)
    return {"text": text, "tokens": tokens, "alpha": [round(float(a), 5) for a in alpha],
            "probabilities": {name: round(float(p), 5) for name, p in zip(labels, probs)},
            "predicted": labels[best], "label": label, "deciding": list(deciding) if deciding else None}


def _section(i: int, r: dict) -> str:
    top = max(r["alpha"], default=0.0)
    words = []
    for j, (t, a) in enumerate(zip(r["tokens"], r["alpha"])):
        strength = a / top if top > 0 else 0.0
        mark = " deciding" if r["deciding"] and j in r["deciding"] else ""
        words.append(f'<span class="word{mark}" style="background: rgba(214, 69, 69, {strength:.3f})" '
                     f'title="alpha {a:.4f}">{html.escape(t)}</span>')
    truth = ""
    if r["label"] is not None:
        right = "right" if r["label"] == r["predicted"] else "wrong"
        truth = f' <span class="tag {right}">label {html.escape(r["label"])}: {right}</span>'
    probs = ", ".join(f"{html.escape(k)} {v:.3f}" for k, v in r["probabilities"].items())
    return (f'<section class="text"><h2>{i + 1}. {html.escape(r["predicted"])}{truth}</h2>'
            f'<p class="figures">{probs}</p><div class="words">{" ".join(words)}</div></section>')


CSS = """
section.text { border-top: 1px solid var(--line); padding: 10px 0 14px; }
section.text h2 { font-size: 16px; margin: 2px 0 4px; }
section.text .word { cursor: default; }
section.text .word.deciding { text-decoration: underline; text-decoration-thickness: 2px; }
.tag.right { color: #1d6b2f; } .tag.wrong { color: var(--accent); }
"""


def render(data: dict) -> str:
    title = html.escape(data["title"])
    sections = "\n".join(_section(i, r) for i, r in enumerate(data["texts"]))
    summary = html.escape(data.get("summary") or "")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">\n'
            f'<title>{title}</title>\n<style>\n{(STATIC / "explorer.css").read_text(encoding="utf-8")}{CSS}</style>\n'
            f'</head>\n<body>\n<div id="app"><header><h1>{title}</h1><p class="summary">{summary}</p>'
            f'<p class="help">Each word is shaded by its attention weight, the text\'s largest in full colour; '
            f'hover a word for its weight. Underlined: the deciding words, where the data names them.</p></header>\n'
            f'{sections}\n</div>\n<script type="application/json" id="attention-data">{data_json(data)}</script>\n'
            f'</body>\n</html>\n')


def page_data(records: list[dict], model_name: str, labels: tuple, title: str = "caption classify explore") -> dict:
    right = [r for r in records if r["label"] is not None]
    summary = f"model {model_name}; labels {', '.join(labels)}; {len(records)} texts"
    if right:
        summary += f"; {sum(r['label'] == r['predicted'] for r in right)}/{len(right)} right"
    return {"schema": "caption-explore/1", "kind": "classify", "title": title, "generator": f"caption {__version__}",
            "model": {"name": model_name, "labels": list(labels)}, "summary": summary, "texts": records}


def write_page(out: str | os.PathLike, data: dict, inputs=()) -> Path:
    text = render(data)
    with atomic_write(out, "page", inputs) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(out)
