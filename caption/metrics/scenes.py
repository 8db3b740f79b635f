"""Scene metrics as pure functions: the object mentions of a generated caption (the scenes'
grammar), their F1 against a scene's objects, and attention correctness (the alpha mass inside the
box of the object a word names).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..data.scenes import COLORS, NUMBERS, PLURAL, SHAPES, SIZES

_SINGULAR = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURAL.items()}}


@dataclass
class Mention:
    shape: str                      # singular
    color: str | None
    size: str | None
    count: int                      # "two red circles" -> 2
    words: dict[str, int] = field(default_factory=dict)   # "size"/"color"/"shape" -> word position


def parse_mentions(words: list[str]) -> list[Mention]:
    """Object mentions in a generated caption: [number] [size] [color] shape(s)."""
    out = []
    for k, w in enumerate(words):
        if w not in _SINGULAR:
            continue
        m = Mention(_SINGULAR[w], None, None, 1, {"shape": k})
        j = k - 1
        if j >= 0 and words[j] in COLORS:
            m.color, m.words["color"] = words[j], j
            j -= 1
        if j >= 0 and words[j] in SIZES:
            m.size, m.words["size"] = words[j], j
            j -= 1
        if w != _SINGULAR[w]:   # plural: the number before it, else "several" counts as two
            m.count = NUMBERS.index(words[j]) if j >= 0 and words[j] in NUMBERS else 2
        out.append(m)
    return out


def match_objects(mentions: list[Mention], objects: list[dict]) -> list[list[int]]:
    """For each mention, the objects it claims that exist (same shape, and colour and size where
    the mention gives them), each object claimed at most once; greedy in caption order."""
    free = list(range(len(objects)))
    out = []
    for m in mentions:
        got = [i for i in free if objects[i]["shape"] == m.shape
               and m.color in (None, objects[i]["color"]) and m.size in (None, objects[i]["size"])][:m.count]
        free = [i for i in free if i not in got]
        out.append(got)
    return out


def object_f1(captions: list[list[str]], scenes: list[list[dict]]) -> dict[str, float]:
    """Micro precision/recall/F1 over a corpus: a mention of n objects is n claims; a claim is right
    when it matches an object of the scene not claimed before."""
    claims = right = total = 0
    for words, objects in zip(captions, scenes):
        mentions = parse_mentions(words)
        matched = match_objects(mentions, objects)
        claims += sum(m.count for m in mentions)
        right += sum(len(g) for g in matched)
        total += len(objects)
    p = right / claims if claims else 0.0
    r = right / total if total else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def box_mass(alpha: Tensor, boxes: list[list[float]], image_size: tuple[int, int]) -> float:
    """The share of alpha (gh, gw) inside the boxes ([x, y, w, h], not overlapping), each cell's mass
    spread evenly over the pixels it covers: the alpha map upsampled to the image."""
    gh, gw = alpha.shape
    width, height = image_size
    cw, ch = width / gw, height / gh
    total = 0.0
    for x, y, w, h in boxes:
        for r in range(gh):
            oy = max(0.0, min(y + h, (r + 1) * ch) - max(y, r * ch))
            if oy == 0:
                continue
            for c in range(gw):
                ox = max(0.0, min(x + w, (c + 1) * cw) - max(x, c * cw))
                total += float(alpha[r, c]) * ox * oy / (cw * ch)
    return total


def attention_correctness(captions: list[list[str]], attention: list[Tensor], scenes: list[list[dict]],
                          sizes: list[tuple[int, int]]) -> dict[str, float]:
    """At the colour and shape words of every mention that matched, the alpha mass inside the named
    objects' boxes, and how often the argmax location lies in them; chance is their area share.
    attention[k] is (T, gh, gw); sizes[k] the (width, height) the boxes refer to."""
    mass = chance = inside = 0.0
    n = 0
    for words, att, objects, (width, height) in zip(captions, attention, scenes, sizes):
        gh, gw = att.shape[1:]
        mentions = parse_mentions(words)
        for m, got in zip(mentions, match_objects(mentions, objects)):
            if not got:
                continue
            boxes = [objects[i]["bbox"] for i in got]
            area = sum(b[2] * b[3] for b in boxes) / (width * height)
            for role in ("color", "shape"):
                if role not in m.words:
                    continue
                a = att[m.words[role]]                                       # (gh, gw)
                mass += box_mass(a, boxes, (width, height))
                r, c = divmod(int(a.argmax()), gw)
                cx, cy = (c + 0.5) * width / gw, (r + 0.5) * height / gh
                inside += any(x <= cx < x + w and y <= cy < y + h for x, y, w, h in boxes)
                chance += area
                n += 1
    if not n:
        return {"mass": 0.0, "argmax_in_box": 0.0, "chance": 0.0, "words": 0}
    return {"mass": mass / n, "argmax_in_box": inside / n, "chance": chance / n, "words": n}
