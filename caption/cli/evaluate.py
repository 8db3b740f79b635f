"""`caption evaluate` (decode a test set and score it) and `caption score` (score any results file)."""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import default_checkpoint
from ..config import model_kind
from ..errors import EXIT_INPUT, CheckpointError, InputError, OutputError
from ..fileio import output_path, regular_file, shown
from ..safe_read import CAPTION_CHARS
from ..search import IMAGE_COMMANDS
from .datasets import add_dataset_flags, log_line, read_dataset, refused_status
from .flags import add_decode_flags, add_device_flags, decode_options

SCENE_COLUMNS = [("bleu1", "B-1", 1), ("bleu2", "B-2", 1), ("bleu3", "B-3", 1), ("bleu4", "B-4", 1),
                 ("object_f1", "obj F1", 3), ("object_f1_3-4", "F1 3-4 obj", 3),
                 ("attention_mass", "alpha in box", 3), ("attention_argmax_in_box", "argmax in box", 3),
                 ("attention_chance", "chance", 3), ("attention_best_head_mass", "best head in box", 3),
                 ("attention_entropy", "entropy", 2),
                 ("meteor", "METEOR", 1), ("rouge_l", "ROUGE-L", 1), ("cider_d", "CIDEr-D", 1),
                 ("decode_ms_per_image", "ms/image", 1)]
COCO_COLUMNS = [("coco_bleu1", "B-1", 1), ("coco_bleu2", "B-2", 1), ("coco_bleu3", "B-3", 1),
                ("coco_bleu4", "B-4", 1), ("meteor", "METEOR", 2), ("rouge_l", "ROUGE-L", 1), ("cider_d", "CIDEr-D", 1),
                ("attention_entropy", "entropy", 2), ("decode_ms_per_image", "ms/image", 1)]
REAL = ("coco", "karpathy", "flickr8k")


def add_parsers(sub) -> None:
    model_help = f"checkpoint (default: the shipped model, {default_checkpoint('scenes-soft.pt')})"
    ev = sub.add_parser("evaluate", help="score models on a test set",
                        description="Decode a test set and print, per model, BLEU-1..4 (0-100); on the scenes "
                                    "object F1 (all scenes, and those with 3-4 objects), attention correctness "
                                    "(alpha mass inside the named object's box at its colour and shape words, "
                                    "and how often the argmax falls inside), its chance level (box area / image "
                                    "area), the mean attention entropy and the decode time per image; and the "
                                    "coco-caption scores METEOR, ROUGE-L and CIDEr-D (on COCO, Karpathy's "
                                    "splits and Flickr8k, coco-caption's BLEU too, beside the rows of Xu et al. "
                                    "2015, Table 1). METEOR needs Java: a java that fails to run or gives no "
                                    "answer in time is one warning line, and METEOR is left out.")
    ev.add_argument("--model", type=Path, action="append", help=model_help + "; repeat to compare")
    add_dataset_flags(ev)
    ev.add_argument("--n", type=int, default=1000, help="built-in scenes to score (default: 1000)")
    add_decode_flags(ev, IMAGE_COMMANDS)
    add_device_flags(ev)
    ev.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    ev.add_argument("--results", type=Path,
                    help="also write the captions as a coco-caption results file [{image_id, caption}]. Several "
                         "models: one file each beside it, FILE-STEM.json (STEM: the model's file name less .pt; "
                         "a name an earlier --model took gets -2, -3, ...: a/m.pt and b/m.pt write r-m.json and "
                         "r-m-2.json). Never written over a model, a data file or a file of another kind; every "
                         "name is checked before decoding")
    ev.add_argument("--no-coco-scores", dest="coco", action="store_false",
                    help="leave out METEOR, ROUGE-L and CIDEr-D (and coco-caption's BLEU)")
    ev.add_argument("--workers", type=int, default=0, help="processes decoding image files (default: 0)")
    ev.set_defaults(run=cmd_evaluate)

    sc = sub.add_parser("score", help="score a results file against references",
                        description="Score any coco-caption results file ([{\"image_id\", \"caption\"}], ours "
                                    "or another model's) against COCO-format references (captions_*.json) or "
                                    "Karpathy's split file (with --split), on the images the results name: "
                                    "BLEU-1..4, METEOR (needs Java; left out after one line when java fails to "
                                    "run or gives no answer in time), ROUGE-L, CIDEr-D.")
    sc.add_argument("--results", type=Path, required=True,
                    help=f"the results JSON. Image ids are integers: 2.0 and \"2\" are read as 2; 1.5, true, null "
                         "are refused; any other string is an id of its own. Every caption must be text of at "
                         f"most {CAPTION_CHARS:,} characters (a null is refused, never scored as \"None\")")
    sc.add_argument("--annotations", type=Path, required=True,
                    help="COCO-format captions file, Karpathy's dataset_*.json, or Flickr8k.token.txt")
    sc.add_argument("--split", choices=("train", "val", "test"), default="test",
                    help="the split of a Karpathy file (default: test)")
    sc.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    sc.set_defaults(run=cmd_score)


def _table(rows: list[tuple[str, str, dict]], columns: list[tuple]) -> list[str]:
    """A Markdown table; a coco-caption BLEU that was not computed falls back to nltk's (`bleuN`)."""
    rows = [(name, att, {**{k.replace("coco_", ""): v for k, v in s.items()}, **s} if "coco_bleu1" in s else
             {**s, **{f"coco_{k}": v for k, v in s.items() if k.startswith("bleu")}}) for name, att, s in rows]
    cols = [c for c in columns if any(c[0] in s for _, _, s in rows)]
    lines = ["| model | attention | " + " | ".join(c[1] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for name, att, s in rows:
        cells = [f"{s[k]:.{d}f}" if k in s else "-" for k, _, d in cols]
        lines.append(f"| {name} | {att} | " + " | ".join(cells) + " |")
    return lines


def _paper_key(args) -> str | None:
    if args.dataset == "flickr8k":
        return "flickr8k"
    if args.dataset == "coco":
        return "coco"
    if args.dataset == "karpathy":
        stem = Path(args.data).stem.replace("dataset_", "")
        return stem if stem in ("coco", "flickr8k", "flickr30k") else None
    return None


def _data_files(args) -> list[Path]:
    """The files --dataset reads, which a results file must never replace."""
    if args.dataset == "scenes" or args.data is None:
        return []
    d = Path(args.data)
    if args.dataset == "folder":
        return [d, d / "captions.json"]
    if args.dataset == "coco":
        return [d / "annotations" / f"captions_{part}{args.year}.json" for part in ("train", "val")]
    if args.dataset == "karpathy":
        return [d]
    return [d / name for name in ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
                                  "Flickr_8k.testImages.txt")]


def results_names(results: Path, models: list[Path]) -> list[Path]:
    """One results file per model: RESULTS itself for one model; for several, RESULTS-STEM.json
    beside it (STEM: the model's file name less .pt), and where an earlier --model took that name,
    RESULTS-STEM-2.json, -3, ...: a/m.pt and b/m.pt write r-m.json and r-m-2.json."""
    if len(models) == 1:
        return [results]
    taken: set[str] = set()
    out = []
    for model in models:
        stem = name = Path(model).stem
        n = 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        out.append(results.with_name(f"{results.stem}-{name}{results.suffix}"))
    return out


def model_labels(models: list[Path]) -> list[str]:
    """The table's row names: each model's file name; the path as given where several models share
    a file name (a/m.pt, b/m.pt), and #2, #3 for a path given more than once."""
    names = [Path(m).name for m in models]
    plain = [shown(n if names.count(n) == 1 else m) for n, m in zip(names, models)]
    return [p if plain[:k].count(p) == 0 else f"{p} #{plain[:k].count(p) + 1}" for k, p in enumerate(plain)]


def _outputs(args, models: list[Path]) -> list[Path | None]:
    """The results file of each model, every one checked before any decoding (OutputError): never
    a model, a data file, a folder or a file of another kind, and no two the same file."""
    if not args.results:
        return [None] * len(models)
    if len(models) > 1 and Path(args.results).is_dir():
        raise OutputError(f"{shown(args.results)}: is a directory; --results names a file (several models: "
                          "FILE-MODEL.json beside it)")
    outs = results_names(Path(args.results), models)
    inputs = [*models, *_data_files(args)]
    targets = [output_path(out, "results", inputs) for out in outs]
    if len(set(targets)) < len(targets):        # links to one file: the second would replace the first
        raise OutputError(f"{shown(args.results)}: two models' results files are one file "
                          f"({shown(next(t for t in targets if targets.count(t) > 1))})")
    return outs


def cmd_evaluate(args) -> int:
    from ..api import load
    from ..metrics.coco import PAPER_TABLE1, SPICE_NOTE
    from ..metrics.evaluate import caption_and_score, results_json, write_results
    options = decode_options(args)
    if args.workers < 0:
        raise InputError(f"--workers must be at least 0, got {args.workers}")
    models = list(args.model or [default_checkpoint("scenes-soft.pt")])
    for path in models:        # a missing second model must not cost the first one's decoding
        regular_file(path, "checkpoint file", CheckpointError)
    outs, labels = _outputs(args, models), model_labels(models)
    inputs = [*models, *_data_files(args)]
    rows, read, skipped = [], {}, 0
    for path, out, label in zip(models, outs, labels):
        model = load(path, args.device, args.precision)
        size = model.config.image_size      # read once per image size: refusals are named once
        if size not in read:
            read[size] = read_dataset(args, args.split, size, args.n, progress=True)
        results, scores, data = caption_and_score(model, read[size], options, progress=True, workers=args.workers,
                                                  coco=args.coco, warn=log_line)
        if out is not None:
            write_results(out, results_json(results, data.image_ids), inputs=inputs)
            log_line(f"wrote {len(results)} captions" + (f" of {shown(path)}" if len(models) > 1 else "") +
                     f" to {shown(out)}")
        skipped += scores.get("skipped_images", 0)
        rows.append((label, model_kind(model.config), scores))
        if args.json:
            print(json.dumps({"model": str(path), "attention": model_kind(model.config), **scores}))
    if not args.json:
        real = args.dataset in REAL
        print(f"{rows[0][2]['images']} images, beam {args.beam}" +
              ("" if args.coco or not real else "; BLEU by nltk (--no-coco-scores)"))
        # the paper's rows beside a held-out split: test, or COCO's val (it publishes no test captions)
        held_out = args.split == "test" or (args.dataset == "coco" and args.split == "val")
        paper = PAPER_TABLE1.get(_paper_key(args)) if real and held_out else None
        if args.coco:
            log_line(SPICE_NOTE)
        if paper:
            for att, (b1, b2, b3, b4, meteor) in paper.items():
                rows.append(("Xu et al. 2015, Table 1", att, {"coco_bleu1": b1, "coco_bleu2": b2, "coco_bleu3": b3,
                                                            "coco_bleu4": b4, "meteor": meteor}))
        print("\n".join(_table(rows, COCO_COLUMNS if real else SCENE_COLUMNS)))
    refused = refused_status(*read.values())   # entries outside the image root: named as read, counted here
    return EXIT_INPUT if skipped or refused else 0


def cmd_score(args) -> int:
    from ..data.formats import read_references
    from ..metrics.coco import SPICE_NOTE, coco_scores
    from ..metrics.results import read_results, references_for
    candidates = read_results(args.results)
    refs = references_for(read_references(args.annotations, args.split), candidates, args.annotations,
                          args.results)
    scores = coco_scores(refs, candidates, log_line)
    log_line(SPICE_NOTE)
    if args.json:
        print(json.dumps({"images": len(candidates), **scores}))
    else:
        print(f"{len(candidates)} images")
        print("\n".join(_table([(shown(args.results.name), "-", scores)], COCO_COLUMNS)))
    return 0
