"""`caption train` and `caption features`: training a captioner, and caching a frozen backbone's
features so that training runs the decoder alone."""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import RECIPES, CaptionConfig, CaptionTrainConfig
from ..errors import InputError
from .datasets import add_dataset_flags, log_line, read_dataset, refused_status
from .flags import add_config_flags, config_from


def add_parsers(sub) -> None:
    tr = sub.add_parser("train", help="train an image captioner",
                        description="Train on built-in scenes (generated in memory, train and validation "
                                    "from different seeds), on a data set as it ships (COCO, Karpathy's splits, "
                                    "Flickr8k) or on a folder in COCO captions format; or, with --features, on "
                                    "a frozen backbone's cached features. After every epoch the validation "
                                    "images are decoded and scored; the best model is kept at --out and the "
                                    "state to resume at OUT.last.pt. Ctrl-C or SIGTERM saves that state "
                                    "(at the end of the batch) and exits with status 130; a loss that turns "
                                    "NaN stops the run (status 1) with the last good files as they were.")
    add_dataset_flags(tr, split=None)
    tr.add_argument("--val-data", type=Path, help="validation captions for --dataset folder")
    tr.add_argument("--features", type=Path, help="train on the cache `caption features` wrote in this folder "
                                                  "(its train and val splits) instead of images")
    tr.add_argument("--out", type=Path, required=True, help="where to write the best checkpoint")
    tr.add_argument("--resume", action="store_true",
                    help="continue from OUT.last.pt (after its last epoch, or inside an epoch with --save-every); "
                         "refused when there is none")
    tr.add_argument("--force", action="store_true",
                    help="start a fresh run although OUT holds an earlier one (refused otherwise): its files "
                         "are first renamed (m.pt to m.replaced-N.pt, m.last.pt to m.replaced-N.last.pt, "
                         "m.history.jsonl to m.replaced-N.history.jsonl, N the first number free)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.add_argument("--recipe", choices=sorted(RECIPES),
                    help="set many fields at once, the flags given still winning: capgen-coco is the authors' "
                         "COCO model and training (embedding 512, LSTM 1800, attention 512, 2-layer init and "
                         "attention MLPs, dropout 0.5 on h and before the output, a zero first word, Adam 2e-4 "
                         "without decay or clipping, the 10,000 most frequent words; docs/paper.md)")
    add_config_flags(tr, CaptionConfig)
    add_config_flags(tr, CaptionTrainConfig)
    tr.set_defaults(run=cmd_train)

    fe = sub.add_parser("features", help="cache a frozen backbone's features for training",
                        description="Encode every image of the train and val splits (or --split) with a "
                                    "torchvision backbone and its local weights, and write the features "
                                    "(fp16, memory-mapped, with an index) to --out. An interrupted run "
                                    "resumes where it stopped. `caption train --features DIR` then trains "
                                    "the decoder without running the CNN.")
    add_dataset_flags(fe, split=None)
    fe.add_argument("--split", action="append", choices=("train", "val", "test"),
                    help="a split to encode; repeat for several (default: train and val)")
    fe.add_argument("--val-data", type=Path, help="validation captions for --dataset folder")
    fe.add_argument("--out", type=Path, required=True, help="folder of the cache")
    fe.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    fe.add_argument("--workers", type=int, default=2, help="processes decoding images (default: 2)")
    fe.add_argument("--quiet", action="store_true", help="no progress bar")
    fe.add_argument("--device", help="cpu, cuda or cuda:N for the backbone (default: CUDA when present)")
    for name in ("encoder", "encoder_weights", "image_size", "grid"):
        _copy_flag(fe, tr, name)
    fe.set_defaults(run=cmd_features)


def _copy_flag(to, src, dest: str) -> None:
    action = next(a for a in src._actions if a.dest == dest)
    to.add_argument(*action.option_strings, dest=dest, type=action.type, choices=action.choices,
                    default=None, metavar=action.metavar, help=action.help)


def cmd_train(args) -> int:
    from dataclasses import fields

    from ..lock import run_lock
    from ..training.distributed import world
    from ..training.loop import train
    from ..training.setup import complete_model_config, feature_manifest, prepare_run, read_feature_cache
    from ..training.state import finished
    from ..training.stop import Interrupted
    model_cfg, train_cfg = config_from(CaptionConfig, args), config_from(CaptionTrainConfig, args)
    given = {f.name for f in fields(CaptionConfig) if getattr(args, f.name, None) is not None}
    if train_cfg.init:      # the model, its vocabulary and weights are the checkpoint's
        vocabulary = [n for n in ("vocab_size", "min_count") if getattr(args, n, None) is not None]
        if given or args.recipe or vocabulary:
            flag = "--recipe" if args.recipe else "--" + sorted([*given, *vocabulary])[0].replace("_", "-")
            raise InputError(f"--init {train_cfg.init} brings its own model; {flag} does not apply to it")
        from ..training.loop import init_config
        model_cfg = init_config(train_cfg.init)
    manifest = feature_manifest(args.features) if args.features else None
    complete_model_config(model_cfg, manifest, given)
    # every check before any real work: names, kinds, inputs, the device and precision, an earlier run
    setup = prepare_run(model_cfg, train_cfg, args.out, resume=args.resume, force=args.force, inputs=_inputs(args))
    say = print if world().main else (lambda *a, **k: None)
    done = finished(args.out, train_cfg, world().size) if args.resume else None
    if done:
        if world().main:       # a lock left by a run killed after its last save is taken over and removed
            with run_lock(args.out):
                pass
        say(done)
        return 0
    features = None
    if args.features:     # memory-mapped
        _, train_set, val_set, features = read_feature_cache(args.features)
        log_line(f"features from {args.features}: {manifest['encoder']} grid {manifest['grid']}, "
                 f"{len(train_set)} train / {len(val_set)} val images")
    else:
        if args.dataset != "scenes":     # files decoded by workers: their shared memory, before the data is read
            from ..data.loader import check_shared_memory
            check_shared_memory(model_cfg.image_size, train_cfg.batch_size, train_cfg.workers)
        train_set, val_set = _splits(args, model_cfg.image_size, train_cfg)
    try:
        train(model_cfg, train_cfg, train_set, val_set, args.out, features=features, manifest=manifest,
              resume=args.resume, force=args.force, progress=not args.quiet, log=say, warn=log_line, setup=setup)
    except Interrupted as e:
        print(f"caption: interrupted by {e}", file=sys.stderr)
        return 130
    say(f"saved the best model to {args.out}")
    return refused_status(train_set, val_set)


def _inputs(args) -> list[Path]:
    """The files a train or features command reads, which none of its outputs may be: the data set
    (its captions file), the backbone's weights, the feature cache. An output is also refused over
    a file of another kind (a data set, an image, text), which covers the data sets' other files."""
    found = []
    for p in (args.data, args.val_data, args.images, args.encoder_weights, getattr(args, "features", None),
              getattr(args, "init", None)):
        if p is not None:
            p = Path(p)
            found += [p, p / "captions.json"] + [p / f"{s}.{x}" for s in ("manifest", "train", "val", "test")
                                                 for x in ("json", "npy")]
    return found


def _splits(args, image_size: int, cfg: CaptionTrainConfig):
    """The train and val ImageSets of --dataset; a real val split is cut to --val-size images."""
    if args.dataset == "folder":
        if not args.data or not args.val_data:
            raise InputError("--dataset folder needs --data and --val-data")
        return (read_dataset(args, "train", image_size, 0),
                read_dataset(args, "val", image_size, 0, folder=args.val_data))
    train_set = read_dataset(args, "train", image_size, cfg.train_size, progress=not args.quiet)
    val_set = read_dataset(args, "val", image_size, cfg.val_size)
    if args.dataset != "scenes" and len(val_set) > cfg.val_size:
        val_set = val_set.head(cfg.val_size)
        log_line(f"validating on the first {cfg.val_size} images of the val split (--val-size)")
    return train_set, val_set


def cmd_features(args) -> int:
    import torch

    from ..data.features import write_features
    from ..device import resolve_device
    from ..image.encoder import Encoder
    if args.encoder in (None, "cnn") or not args.encoder_weights:
        raise InputError("caption features needs a torchvision backbone and its weights: --encoder vgg19 "
                         "--encoder-weights FILE (the built-in CNN trains with the decoder)")
    if args.batch_size < 1 or args.workers < 0:
        raise InputError(f"need --batch-size >= 1 and --workers >= 0, got {args.batch_size} and {args.workers}")
    if args.dataset == "scenes":
        raise InputError("caption features reads images from disk: give --dataset coco, karpathy, flickr8k or folder "
                         "(the built-in scenes train the built-in CNN)")
    device = resolve_device(args.device)           # one this machine lacks: one line, before any work
    from ..data.features import check_cache_folder
    splits = args.split or ["train", "val"]
    if args.dataset == "folder" and ("test" in splits or ("val" in splits and not args.val_data)):
        raise InputError("--dataset folder has one captions file per split: --data for train, --val-data for val")
    roots = [p if p.is_dir() else p.parent for p in (Path(a) for a in (args.data, args.val_data, args.images) if a)]
    check_cache_folder(args.out, splits, _inputs(args), roots)
    config = CaptionConfig(encoder=args.encoder, encoder_weights=str(Path(args.encoder_weights).resolve()),
                           image_size=args.image_size or 224, grid=args.grid)
    from ..data.loader import check_shared_memory
    check_shared_memory(config.image_size, args.batch_size, args.workers)    # before the backbone is built
    encoder = Encoder(config).to(device)
    refused = []
    for split in splits:
        data = read_dataset(args, split, config.image_size, 0, folder=args.val_data if split == "val" else None)
        with torch.inference_mode():
            path = write_features(encoder, config, data, args.out, split, args.batch_size, args.workers,
                                  progress=not args.quiet, log=log_line)
        print(f"{split}: {len(data)} images -> {path} (grid {encoder.grid[0]}x{encoder.grid[1]}, D {encoder.dim})")
        refused.append(data)
    return refused_status(*refused)
