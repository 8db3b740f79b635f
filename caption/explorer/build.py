"""Decode images with every model run and build the explorer's data (caption.explorer.record).
Models come loaded (CaptionModel objects); this module reads no checkpoint and parses no flag."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..search import HARD_MODES, DecodeOptions
from .record import picture, report, run_entry, scene_objects

MAX_IMAGES = 1000    # one page holds every map inline; past this split the images over pages


def runs_of(models: list[tuple[str, object]], hard_modes: tuple[str, ...]) -> list[tuple[dict, object, str]]:
    """(run entry, model, hard mode) for each column: a hard model once per test-time mode."""
    out = []
    for name, model in models:
        modes = hard_modes if model.config.attention == "hard" else ("expected",)
        for mode in modes:
            out.append((run_entry(name, model.config, model.model.grid, mode, 0), model, mode))
    return out


def scene_images(n: int, seed: int, size: int) -> list[dict]:
    """n built-in scenes (never used in training for seeds past 2), with their objects' boxes."""
    from ..data.scenes import make_scene
    out = []
    for k in range(n):
        scene = make_scene(seed, k, size)
        out.append({"name": f"scene-{k} (seed {seed})", "source": scene.image,
                    "objects": scene_objects(scene, size)})
    return out


def build(images: list[dict], models: list[tuple[str, object]], options: DecodeOptions = DecodeOptions(),
          hard_modes: tuple[str, ...] = HARD_MODES, title: str = "caption explore",
          warn: Callable[[str], None] | None = None) -> tuple[dict, int]:
    """images [{name, source, objects?}] and models [(name, CaptionModel)] -> (the page's data, the
    number of images left out because they could not be read; each is named through `warn`)."""
    if not models:
        raise InputError("explore needs at least one model")
    if len(images) > MAX_IMAGES:
        raise InputError(f"{len(images)} images; one page takes at most {MAX_IMAGES} (split them over pages)")
    bad = [m for m in hard_modes if m not in HARD_MODES]
    if bad or not hard_modes:
        raise InputError(f"hard modes must be some of {', '.join(HARD_MODES)}, got {', '.join(bad) or 'none'}")
    runs = runs_of(models, hard_modes)
    crop = runs[0][0]["crop"]
    if any(entry["crop"] != crop for entry, _, _ in runs):   # one picture per image, as each model saw it
        raise InputError("these models prepare images differently (the built-in CNN squeezes the whole image, "
                         "a backbone crops its centre): show them on separate pages")
    kept = []
    for image in images:
        try:
            kept.append({**image, "picture": picture(image["source"], crop)})
        except InputError as e:
            if warn:
                warn(str(e))
    results = [[] for _ in kept]
    for entry, model, mode in runs:
        entry["beam_size"] = options.beam_size
        found = model.caption([im["source"] for im in kept], options=replace(options, hard_mode=mode),
                              all_beams=True) if kept else []
        for per_image, r in zip(results, found):
            per_image.append(r)
    data = report(kept, [e for e, _, _ in runs], results, title)
    return data, len(images) - len(kept)


def image_entries(paths: list[str | Path]) -> list[dict]:
    return [{"name": Path(p).name, "source": p} for p in paths]
