"""Decode a set of images and score the captions: BLEU-1..4, object F1 (overall and by object
count), attention correctness beside its chance level, attention entropy and decode time."""
from __future__ import annotations

import time

import torch

from ..api import CaptionModel
from ..data.images import ImageSet
from ..search import DecodeOptions
from .bleu import bleu
from .scenes import attention_correctness, object_f1


def evaluate_captions(model: CaptionModel, data: ImageSet, options: DecodeOptions = DecodeOptions(),
                      batch_size: int = 100, progress: bool = False) -> dict:
    """Caption every image of `data` (uint8 tensors at the model's size) and score the captions."""
    t0 = time.perf_counter()
    results = model.caption_tensors(data.images, options, batch_size, progress)
    seconds = time.perf_counter() - t0
    words = [r.words for r in results]
    b = bleu(words, data.captions)
    scores = {f"bleu{n}": b[n - 1] for n in range(1, 5)}
    scores["images"] = len(data)
    scores["decode_ms_per_image"] = 1000 * seconds / max(1, len(data))
    if any(data.objects):
        scores.update({f"object_{k}": v for k, v in object_f1(words, data.objects).items()})
        for name, keep in (("1-2", (1, 2)), ("3-4", (3, 4))):
            idx = [i for i, o in enumerate(data.objects) if len(o) in keep]
            scores[f"object_f1_{name}"] = object_f1([words[i] for i in idx],
                                                    [data.objects[i] for i in idx])["f1"]
        att = attention_correctness(words, [r.attention for r in results], data.objects, data.sizes)
        scores.update({f"attention_{k}": v for k, v in att.items()})
    maps = [r.attention.flatten(1) for r in results if r.words]
    if maps:
        alpha = torch.cat(maps)                                              # (words, L)
        scores["attention_entropy"] = float(-torch.special.xlogy(alpha, alpha).sum(1).mean())
    return scores


def summary(scores: dict) -> str:
    """One line for a log."""
    parts = [f"BLEU-4 {scores['bleu4']:.1f}"]
    if "object_f1" in scores:
        parts.append(f"object F1 {scores['object_f1']:.3f} (3-4 objects {scores['object_f1_3-4']:.3f})")
        parts.append(f"attention in box {scores['attention_mass']:.3f} vs chance "
                     f"{scores['attention_chance']:.3f}")
    return ", ".join(parts)


def selection_score(scores: dict) -> float:
    """The number by which training keeps its best model: object F1 first where the data has
    objects (the scenes), else BLEU-4."""
    return scores.get("object_f1", 0.0) * 100 + scores["bleu4"]
