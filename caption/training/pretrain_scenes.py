"""Encoder pre-training on the scenes' object labels, our stand-in for the paper's ImageNet CNN.

Xu et al. take annotations from a VGG net trained on ImageNet; nothing can be downloaded here, so
the built-in CNN first learns to recognise the scene objects: multi-label classification of which
colours, shapes and sizes an image holds. Each location scores every label and the image's score
is the maximum over locations (multiple-instance learning), so the features that answer are the
ones at the objects; no box or location is ever given. Colours, shapes and sizes are separate labels:
labels for colour-shape pairs learned far slower (BENCHMARKS.md, "Encoder pre-training"). The
caption decoder is then trained on top, the encoder still learning with it.
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from ..data.images import ImageSet
from ..data.scenes import COLORS, SHAPES, SIZES
from ..device import autocast
from ..image.encoder import Encoder

LABELS = list(COLORS) + list(SHAPES) + list(SIZES)
_INDEX = {name: i for i, name in enumerate(LABELS)}


def object_labels(objects: list[list[dict]]) -> Tensor:
    """Multi-hot (N, C) of the labels each image holds."""
    y = torch.zeros(len(objects), len(LABELS))
    for n, objs in enumerate(objects):
        for o in objs:
            for attribute in ("color", "shape", "size"):
                y[n, _INDEX[o[attribute]]] = 1.0
    return y


def label_scores(head: nn.Linear, feats: Tensor) -> Tensor:
    """feats (B, L, D) -> image scores (B, C): each label's best location."""
    return head(feats).amax(1)                                                  # (B, C)


def pretrain_encoder(encoder: Encoder, data: ImageSet, epochs: int = 1, batch_size: int = 64,
                     lr: float = 2e-3, seed: int = 0, progress: bool = True,
                     log: Callable[[str], None] = print, precision: str = "fp32") -> dict[str, float]:
    """Train the encoder (and a throw-away label head) on the object labels, in bf16 autocast when
    the run's resolved `precision` is bf16 (fp16 would need its own loss scaler: that run pre-trains
    in fp32); returns the last epoch's label F1 and exact-set
    accuracy (every label of an image right) on the training images."""
    if not any(data.objects):
        raise ValueError("encoder pre-training needs object labels (built-in scenes)")
    device = next(encoder.parameters()).device
    head = nn.Linear(encoder.dim, len(LABELS)).to(device)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    y_all = object_labels(data.objects)
    precision = "bf16" if precision == "bf16" else "fp32"
    scores = {}
    for epoch in range(1, epochs + 1):
        encoder.train()
        t0, right, tp, predicted, actual = time.perf_counter(), 0, 0, 0, 0
        order = torch.randperm(len(data), generator=gen)
        steps = range(0, len(order), batch_size)
        for k in tqdm(steps, desc=f"pretrain {epoch}/{epochs}", disable=not progress, leave=False):
            idx = order[k:k + batch_size]
            x = data.images[idx].to(device).float() / 255
            y = y_all[idx].to(device)
            with autocast(device, precision):
                scores = label_scores(head, encoder(x)).float()                 # (B, C)
            loss = F.binary_cross_entropy_with_logits(scores, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            said, true = scores.detach() > 0, y > 0.5
            right += int((said == true).all(1).sum())
            tp, predicted, actual = tp + int((said & true).sum()), predicted + int(said.sum()), actual + int(true.sum())
        scores = {"f1": 2 * tp / max(1, predicted + actual), "exact": right / len(data)}
        log(f"pretrain epoch {epoch}: label F1 {scores['f1']:.3f}, all labels right on "
            f"{100 * scores['exact']:.1f}% of training images, {time.perf_counter() - t0:.0f}s")
    return scores
