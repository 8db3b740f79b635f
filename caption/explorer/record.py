"""The explorer's data for images: one entry per model run (a model, and for a hard model its
test-time mode), and per image its picture and, for every run, every beam's words and maps
(schema.md gives each field). Built from CaptionResults, so the page shows what the API returns."""
from __future__ import annotations

import base64
import io
import math

from .. import __version__
from ..data.images import as_uint8
from .maps import collapsed, coverage, quantise, variation, word_figures

SCHEMA = "caption-explore/1"
VIEW = 224          # the side of the picture the page embeds (the model's view, resized)


def run_entry(name: str, config, grid: tuple[int, int], hard_mode: str, beam_size: int) -> dict:
    """One column of the page: a model (its config) decoded one way."""
    attention, transformer = config.attention, config.decoder == "transformer"
    return {"name": name, "attention": attention,
            "mode": hard_mode if attention == "hard" else None,
            "grid": list(grid), "beam_size": beam_size, "crop": config.encoder != "cnn",
            "label": name + (f" ({hard_mode})" if attention == "hard" else ""),
            "decoder": config.decoder, "layers": config.layers if transformer else None,
            "heads": config.heads if transformer else None}


def report(images: list[dict], runs: list[dict], results: list[list], title: str = "caption explore") -> dict:
    """The page's data: images [{name, source or picture (a data URI), objects?}], runs (run_entry),
    and results[i][r] the CaptionResult of image i by run r (with .beams for every beam)."""
    crop = runs[0]["crop"] if runs else False
    out = []
    for image, per_run in zip(images, results):
        shown = image["picture"] if "picture" in image else picture(image.get("source"), crop)
        out.append({"name": image["name"], "image": shown,
                    "objects": image.get("objects"),
                    "runs": [run_record(r, run, image.get("objects")) for r, run in zip(per_run, runs)]})
    return {"schema": SCHEMA, "kind": "image", "title": title, "generator": f"caption {__version__}",
            "runs": runs, "images": out}


def picture(source, crop: bool) -> str | None:
    """The image as the model saw it (resized, centre-cropped where the model crops), VIEW pixels
    square, as a JPEG data URI; None without one."""
    if source is None:
        return None
    from PIL import Image
    x = as_uint8(source, VIEW, crop)                                        # (3, VIEW, VIEW)
    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).contiguous().numpy(), "RGB").save(buf, "JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def scene_objects(scene, size: int) -> list[dict]:
    """A built-in scene's objects with their boxes as fractions of the image side."""
    return [{"bbox": [round(v / size, 6) for v in o.bbox], "shape": o.shape, "color": o.color,
             "size": o.size, "label": f"{o.size} {o.color} {o.shape}"} for o in scene.objects]


def named_objects(words: list[str], objects: list[dict]) -> list[list[int]]:
    """For each word, the objects of the scene its mention names (the scenes' grammar: the
    number, size, colour and shape words of a mention all name its objects); [] for other words."""
    from ..data.scenes import NUMBERS
    from ..metrics.scenes import match_objects, parse_mentions
    mentions = parse_mentions(words)
    out: list[list[int]] = [[] for _ in words]
    for m, got in zip(mentions, match_objects(mentions, objects)):
        first = min(m.words.values())
        number = [first - 1] if first > 0 and words[first - 1] in NUMBERS else []
        for position in [*m.words.values(), *number]:
            out[position] = got
    return out


def run_record(result, run: dict, objects: list[dict] | None = None) -> dict:
    """Every beam of one run on one image, and the coverage and variation of the best one."""
    beams = result.beams or [result]
    best = beams[0].attention.flatten(1)                                    # (T, L)
    cover = coverage(best) if len(beams[0].words) else None
    maps, scales = quantise(cover.unsqueeze(0)) if cover is not None else (None, None)
    v = variation(best) if run["attention"] != "none" else float("nan")
    return {"beams": [beam_record(b, objects) for b in beams],
            "coverage": {"map": maps, "scale": scales[0]} if maps else None,
            "variation": None if math.isnan(v) else round(v, 6),
            "collapsed": run["attention"] != "none" and collapsed(best)}


def beam_record(result, objects: list[dict] | None = None) -> dict:
    T = len(result.words)
    alpha = result.attention.flatten(1)                                     # (T, L)
    maps, scales = quantise(alpha)
    return {"words": result.words, "score": round(float(result.score), 6),
            "logprobs": [round(x, 6) for x in result.logprobs] if result.logprobs is not None else None,
            "maps": maps, "scales": scales,
            "locations": [list(rc) for rc in result.locations] if result.locations is not None else None,
            "objects": named_objects(result.words, objects) if objects else None,
            "heads": head_maps(result.heads),
            **(word_figures(alpha) if T else {"peak": [], "entropy": []})}


def head_maps(heads) -> dict | None:
    """A Transformer's every map, (Y, h, T, gh, gw), quantised as Y * h * T maps in that order
    (layer, head, word); None for other models."""
    if heads is None:
        return None
    Y, h, T = heads.shape[:3]
    maps, scales = quantise(heads.reshape(Y * h * T, -1))
    return {"maps": maps, "scales": scales}
