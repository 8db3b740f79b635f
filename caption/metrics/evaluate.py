"""Decode a set of images and score the captions: BLEU-1..4, object F1 (overall and by object
count), attention correctness beside its chance level, attention entropy and decode time; with
`coco`, the coco-caption scores (BLEU, METEOR, ROUGE-L, CIDEr-D) too. Results files in the format
of coco-caption and every captioning paper: [{"image_id": int, "caption": str}]."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import torch

from ..data.images import ImageSet, center_crop
from ..data.loader import batches_of, source
from ..decoding import CaptionModel, CaptionResult
from ..errors import InputError
from ..fileio import atomic_write
from ..safe_read import CAPTION_CHARS
from ..search import DecodeOptions
from .bleu import bleu
from .scenes import attention_correctness, object_f1


def caption_set(model: CaptionModel, data: ImageSet, options: DecodeOptions = DecodeOptions(),
                batch_size: int = 100, progress: bool = False, workers: int = 0,
                features: torch.Tensor | None = None,
                skip: Callable[[str], None] | None = None) -> tuple[list[CaptionResult], list[int]]:
    """Caption every image of `data`, in order: from memory, from the files (streamed by `workers`
    processes), or from a frozen backbone's cached features (B, L, D). A file that cannot be decoded
    is `skip(line)` and left out (InputError without `skip`): (the captions, the images' indices)."""
    items = source(data, model.config.image_size, center_crop(model.config), features)
    done: list[int] = []

    def recorded(batches):
        for x, idx in batches:
            done.extend(idx.tolist())
            yield x, idx
    batches = recorded(batches_of(items, torch.arange(len(data)), batch_size, workers, skip))
    results = model.caption_batches(batches, options, features is not None, progress, -(-len(data) // batch_size))
    return results, done


def score_captions(results: list[CaptionResult], data: ImageSet, coco: bool = False,
                   warn: Callable[[str], None] = print, cider: bool = False) -> dict:
    """cider: CIDEr-D (times 100, as papers print it) by pycocoevalcap's scorer on the captions as tokenised (what
    self-critical training's validation selects on); `coco` gives it too, after coco-caption's
    own tokeniser."""
    words = [r.words for r in results]
    b = bleu(words, data.captions)
    scores = {f"bleu{n}": b[n - 1] for n in range(1, 5)}
    scores["images"] = len(data)
    if cider and not coco and results:
        from pycocoevalcap.cider.cider import Cider
        gts = {i: [" ".join(c) for c in caps] for i, caps in enumerate(data.captions)}
        res = {i: [" ".join(w)] for i, w in enumerate(words)}
        scores["cider_d"] = 100 * float(Cider().compute_score(gts, res)[0])
    if coco:
        from .coco import coco_scores
        refs = {i: [t[:CAPTION_CHARS] for t in texts] for i, texts in enumerate(data.texts)}
        long = sum(len(t) > CAPTION_CHARS for texts in data.texts for t in texts)
        if long:    # METEOR's Java process dies on a caption of megabytes; one line, not the run
            warn(f"{long} reference captions cut to {CAPTION_CHARS:,} characters for the coco-caption scores")
        scores.update(coco_scores(refs, {i: r.text for i, r in enumerate(results)}, warn))
    if any(data.objects):
        scores.update({f"object_{k}": v for k, v in object_f1(words, data.objects).items()})
        for name, keep in (("1-2", (1, 2)), ("3-4", (3, 4))):
            idx = [i for i, o in enumerate(data.objects) if len(o) in keep]
            scores[f"object_f1_{name}"] = object_f1([words[i] for i in idx],
                                                    [data.objects[i] for i in idx])["f1"]
        att = attention_correctness(words, [r.attention for r in results], data.objects, data.sizes)
        scores.update({f"attention_{k}": v for k, v in att.items()})
        if results and results[0].heads is not None:
            scores.update(best_head(results, data))
    maps = [r.attention.flatten(1) for r in results if r.words]
    if maps:
        alpha = torch.cat(maps)                                              # (T, L) of all captions
        scores["attention_entropy"] = float(-torch.special.xlogy(alpha, alpha).sum(1).mean())
    return scores


def best_head(results: list[CaptionResult], data: ImageSet) -> dict:
    """A Transformer's head whose alpha mass in the named objects' boxes is the highest (each
    head's maps scored as `attention_correctness` scores the mean head's): its mass, its layer and
    its head (both from 1)."""
    Y, h = results[0].heads.shape[:2]
    words = [r.words for r in results]
    mass = {(y, j): attention_correctness(words, [r.heads[y, j] for r in results], data.objects, data.sizes)["mass"]
            for y in range(Y) for j in range(h)}
    (y, j), best = max(mass.items(), key=lambda kv: kv[1])
    return {"attention_best_head_mass": best, "attention_best_head_layer": y + 1, "attention_best_head": j + 1}


def caption_and_score(model: CaptionModel, data: ImageSet, options: DecodeOptions = DecodeOptions(),
                      batch_size: int = 100, progress: bool = False, workers: int = 0,
                      features: torch.Tensor | None = None, coco: bool = False,
                      warn: Callable[[str], None] = print,
                      cider: bool = False) -> tuple[list[CaptionResult], dict, ImageSet]:
    """Caption every image of `data` and score the captions: (the captions, the scores, with the
    decode time per image, and the images they belong to: those of `data` less any file that could
    not be decoded, each reported through `warn` and counted in scores["skipped_images"])."""
    t0 = time.perf_counter()
    results, done = caption_set(model, data, options, batch_size, progress, workers, features,
                                skip=lambda line: warn(f"skipped {line}"))
    seconds = time.perf_counter() - t0
    skipped = len(data) - len(done)
    if skipped:
        if not done:
            raise InputError(f"none of the {len(data)} images could be decoded")
        data = data.take(done)
    scores = score_captions(results, data, coco, warn, cider)
    scores["decode_ms_per_image"] = 1000 * seconds / max(1, len(data))
    if skipped:
        scores["skipped_images"] = skipped
    return results, scores, data


def evaluate_captions(*args, **kwargs) -> dict:
    """The scores of `caption_and_score` alone."""
    return caption_and_score(*args, **kwargs)[1]


def results_json(results: list[CaptionResult], image_ids: list[int]) -> list[dict]:
    """[{"image_id": int, "caption": str}], as coco-caption's COCO.loadRes reads: an id of digits is
    written as the integer, as `caption score` reads it (caption.data.formats.image_id)."""
    from ..data.formats import image_id
    return [{"image_id": image_id(i), "caption": r.text} for i, r in zip(image_ids, results)]


def write_results(path: str | os.PathLike, rows: list[dict], inputs=()) -> None:
    """A results file, never over a file of another kind or one of the command's `inputs`."""
    with atomic_write(path, "results", inputs) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(rows, f)


def summary(scores: dict) -> str:
    """One line for a log."""
    parts = [f"BLEU-4 {scores['bleu4']:.1f}"] + ([f"CIDEr-D {scores['cider_d']:.1f}"] if "cider_d" in scores else [])
    if "object_f1" in scores:
        parts.append(f"object F1 {scores['object_f1']:.3f} (3-4 objects {scores['object_f1_3-4']:.3f})")
        parts.append(f"attention in box {scores['attention_mass']:.3f} vs chance "
                     f"{scores['attention_chance']:.3f}")
    return ", ".join(parts)


def cider_selection(scores: dict) -> float:
    """What self-critical training keeps its best model by: the CIDEr-D it optimises."""
    return scores["cider_d"]


def selection_score(scores: dict) -> float:
    """The number by which training keeps its best model: object F1 first where the data has
    objects (the scenes), else BLEU-4."""
    return scores.get("object_f1", 0.0) * 100 + scores["bleu4"]
