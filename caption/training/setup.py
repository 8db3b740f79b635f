"""What a captioner run settles once, before any work: the checks of its configs and outputs, the
device and precision it trains in, and the model config as `caption train` completes it (a feature
cache's encoder and grid, a torchvision backbone's 224-pixel input). The CLI and `loop.train` both
call these; the training loop takes their result and checks nothing again."""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..config import CaptionConfig, CaptionTrainConfig, check
from ..data.loader import check_shared_memory
from ..device import auto_precision_line, resolve_device, resolve_precision
from ..errors import InputError, OptionError
from ..fileio import shown
from . import distributed as dist
from .history import check_tensorboard
from .outputs import check_fresh, check_outputs
from .state import began_precision, last_path

BACKBONE_IMAGE_SIZE = 224     # the paper's input for backbones (VGG conv5: 14 x 14)


@dataclass(frozen=True)
class RunSetup:
    """The device a run trains on and its autocast precision (`device.resolve_precision`); under
    --precision auto, the line that says what auto chose and why (printed once by the loop)."""
    device: torch.device
    precision: str
    note: str = ""


def prepare_run(model_cfg: CaptionConfig, cfg: CaptionTrainConfig, out: str | Path, *, resume: bool = False,
                force: bool = False, inputs: Iterable[str | os.PathLike | None] = (),
                file_batch: int = 0) -> RunSetup:
    """Every check a run passes before any work, each once: both configs' fields, the output
    names (none is one of `inputs`, nor a file of another kind; --resume needs OUT.last.pt), the
    device and precision this machine has, the tensorboard package when asked for, no earlier run
    at OUT unless `resume` or `force`, and, when batches of `file_batch` images are decoded from
    their files by cfg.workers processes, the shared memory those need."""
    check(cfg)
    check(model_cfg)
    check_outputs(out, resume, inputs)
    device = train_device(cfg)
    precision = resolve_precision(cfg.precision, device, training=True)
    check_tensorboard(cfg.tensorboard)
    check_fresh(out, resume, force)
    if file_batch:
        check_shared_memory(model_cfg.image_size, file_batch, cfg.workers)
    note = auto_precision_line(device, precision) if cfg.precision == "auto" else ""
    if resume and cfg.precision == "auto" and device.type == "cpu":
        # auto measures this CPU; a run resumed on another one keeps the precision it began in
        began = began_precision(out)
        if began in ("fp32", "bf16") and began != precision:
            note = (f"precision auto: {began}, as this run began ({shown(last_path(out))} keeps it), not the "
                    f"{precision} this CPU alone would take; --precision fp32 or bf16 on a fresh run to choose")
            precision = began
    return RunSetup(device, precision, note)


def train_device(cfg: CaptionTrainConfig) -> torch.device:
    """--device, or under torchrun on a GPU machine (no --device, or --device cuda) the GPU of this
    process's LOCAL_RANK: one process per GPU, as NCCL requires."""
    w = dist.world()
    device = resolve_device(cfg.device)
    if not (w.distributed and device.type == "cuda"):
        return device
    gpus, local = torch.cuda.device_count(), w.local_size
    if cfg.device not in (None, "cuda"):
        if local > 1:
            raise OptionError("device", f"{cfg.device}: torchrun started {local} processes on this node and NCCL "
                                        f"needs one GPU each; give --device cuda (each process takes the GPU of "
                                        f"its LOCAL_RANK)")
        return device
    if local > gpus:
        raise OptionError("device", f"cuda: torchrun started {local} processes on this node, which has {gpus} "
                                    f"GPU(s); start one per GPU (--nproc_per_node {gpus}) or train on the CPU "
                                    f"(--device cpu)")
    return torch.device("cuda", w.local_rank)


def given_fields(cfg: CaptionConfig) -> set[str]:
    """The fields of `cfg` that differ from CaptionConfig's defaults: what a Python caller set."""
    default = CaptionConfig()
    return {f.name for f in fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)}


def complete_model_config(cfg: CaptionConfig, manifest: dict | None = None,
                          given: Iterable[str] | None = None) -> None:
    """Complete `cfg` in place as `caption train` does. With a feature cache's `manifest`: its
    encoder, weights (unless given), image size and grid, the backbone frozen; a given encoder
    or image size that differs from the cache's is InputError. Without: a torchvision backbone
    reads 224-pixel images unless the image size was given. given: the fields the user set (the
    CLI's flags; default: those that differ from CaptionConfig's defaults)."""
    given = given_fields(cfg) if given is None else set(given)
    if manifest is None:
        if cfg.encoder != "cnn" and "image_size" not in given:
            cfg.image_size = BACKBONE_IMAGE_SIZE
        return
    for k in ("encoder", "image_size"):
        if k in given and getattr(cfg, k) != manifest[k]:
            raise InputError(f"--{k.replace('_', '-')} {getattr(cfg, k)} differs from the feature cache's "
                             f"{manifest[k]}")
        setattr(cfg, k, manifest[k])
    if "encoder_weights" in given and cfg.encoder_weights:
        cfg.encoder_weights = str(Path(cfg.encoder_weights).resolve())
    else:
        cfg.encoder_weights = manifest["encoder_weights"]
    cfg.grid, cfg.fine_tune = manifest["grid"][0], False


def feature_manifest(folder: str | Path) -> dict:
    """The manifest of the cache `caption features` wrote in `folder`, naming that folder too."""
    from ..data.features import read_manifest
    return {**read_manifest(folder), "folder": str(folder)}


def feature_cache_files(folder: str | Path) -> list[Path]:
    """The files of a feature cache, which no output of a run may be."""
    folder = Path(folder)
    return [folder / "manifest.json"] + [folder / f"{s}.{x}" for s in ("train", "val", "test") for x in ("json", "npy")]


def read_feature_cache(folder: str | Path):
    """(manifest, train set, val set, {"train": features, "val": features}) of the cache that
    `caption features` wrote in `folder` (the manifest also names that folder)."""
    from ..data.features import read_features
    _, train_set, train_f = read_features(folder, "train")
    _, val_set, val_f = read_features(folder, "val")
    return feature_manifest(folder), train_set, val_set, {"train": train_f, "val": val_f}
