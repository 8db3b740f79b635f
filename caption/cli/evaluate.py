"""`caption evaluate` (decode a test set and score it) and `caption score` (score any results file)."""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import default_checkpoint
from ..errors import EXIT_INPUT, DataError, InputError
from .datasets import add_dataset_flags, log_line, read_dataset
from .flags import IMAGE_DECODE, add_decode_flags, add_device_flags, decode_options

SCENE_COLUMNS = [("bleu1", "B-1", 1), ("bleu2", "B-2", 1), ("bleu3", "B-3", 1), ("bleu4", "B-4", 1),
                 ("object_f1", "obj F1", 3), ("object_f1_3-4", "F1 3-4 obj", 3),
                 ("attention_mass", "alpha in box", 3), ("attention_argmax_in_box", "argmax in box", 3),
                 ("attention_chance", "chance", 3), ("attention_entropy", "entropy", 2),
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
                                    "2015, Table 1). METEOR needs Java.")
    ev.add_argument("--model", type=Path, action="append", help=model_help + "; repeat to compare")
    add_dataset_flags(ev)
    ev.add_argument("--n", type=int, default=1000, help="built-in scenes to score (default: 1000)")
    add_decode_flags(ev, **IMAGE_DECODE)
    add_device_flags(ev)
    ev.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    ev.add_argument("--results", type=Path, help="also write the captions as a coco-caption results file "
                                                 "[{image_id, caption}] (several models: FILE-MODEL.json)")
    ev.add_argument("--no-coco-scores", dest="coco", action="store_false",
                    help="leave out METEOR, ROUGE-L and CIDEr-D (and coco-caption's BLEU)")
    ev.add_argument("--workers", type=int, default=0, help="processes decoding image files (default: 0)")
    ev.set_defaults(run=cmd_evaluate)

    sc = sub.add_parser("score", help="score a results file against references",
                        description="Score any coco-caption results file ([{\"image_id\", \"caption\"}], ours "
                                    "or another model's) against COCO-format references (captions_*.json) or "
                                    "Karpathy's split file (with --split), on the images the results name: "
                                    "BLEU-1..4, METEOR (needs Java), ROUGE-L, CIDEr-D.")
    sc.add_argument("--results", type=Path, required=True, help="the results JSON")
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


def cmd_evaluate(args) -> int:
    from ..api import load
    from ..metrics.coco import PAPER_TABLE1, SPICE_NOTE
    from ..metrics.evaluate import caption_and_score, results_json, write_results
    options = decode_options(args)
    if args.workers < 0:
        raise InputError(f"--workers must be at least 0, got {args.workers}")
    if args.results:
        from ..fileio import output_path
        output_path(args.results)
    rows, paths, skipped = [], args.model or [None], 0
    for path in paths:
        model = load(path, args.device, args.precision)
        data = read_dataset(args, args.split, model.config.image_size, args.n, progress=True)
        results, scores, data = caption_and_score(model, data, options, progress=True, workers=args.workers,
                                            coco=args.coco, warn=log_line)
        name = str(path or default_checkpoint("scenes-soft.pt"))
        if args.results:
            out = args.results if len(paths) == 1 else \
                args.results.with_name(f"{args.results.stem}-{Path(name).stem}{args.results.suffix}")
            write_results(out, results_json(results, data.image_ids))
            log_line(f"wrote {len(results)} captions to {out}")
        skipped += scores.get("skipped_images", 0)
        rows.append((Path(name).name, model.config.attention, scores))
        if args.json:
            print(json.dumps({"model": name, "attention": model.config.attention, **scores}))
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
    return EXIT_INPUT if skipped else 0


def _references(path: Path, split: str) -> dict[int, list[str]]:
    """{image id: raw captions} from COCO-format captions, a Karpathy split file, or Flickr8k.token.txt
    (ids: the photo number at the start of each file name, as `--dataset flickr8k` gives them)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".txt":
        refs: dict[int, list[str]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            key, _, caption = line.partition("\t")
            head = key.split("_")[0]
            if caption and head.isdigit() and key.partition("#")[0].endswith(".jpg"):
                refs.setdefault(int(head), []).append(caption)
        if not refs:
            raise DataError(f"{path}: no 'name.jpg#n<TAB>caption' lines")
        return refs
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if "annotations" in data:
            refs: dict[int, list[str]] = {}
            for a in data["annotations"]:
                refs.setdefault(int(a["image_id"]), []).append(a["caption"])
            return refs
        wanted = ("train", "restval") if split == "train" else (split,)
        return {int(e.get("cocoid", e.get("imgid"))): [s["raw"] for s in e["sentences"]]
                for e in data["images"] if e["split"] in wanted}
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: neither COCO-format captions nor a Karpathy split file "
                        f"({type(e).__name__}: {e})") from None


def cmd_score(args) -> int:
    from ..metrics.coco import SPICE_NOTE, coco_scores
    try:
        results = json.loads(args.results.read_text(encoding="utf-8"))
        candidates = {int(r["image_id"]): str(r["caption"]) for r in results}
        if not isinstance(results, list):
            raise TypeError("not a list")
    except FileNotFoundError:
        raise DataError(f"{args.results}: no such file") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{args.results}: not a results file [{{\"image_id\", \"caption\"}}] "
                        f"({type(e).__name__}: {e})") from None
    if not candidates:
        raise DataError(f"{args.results}: no results")
    if len(candidates) < len(results):
        raise DataError(f"{args.results}: {len(results) - len(candidates)} image ids appear more than once "
                        "(coco-caption takes one caption per image)")
    refs = _references(args.annotations, args.split)
    unknown = sorted(set(candidates) - set(refs))
    if unknown:
        raise DataError(f"{args.results}: {len(unknown)} image ids have no references in {args.annotations} "
                        f"(first: {unknown[0]})")
    scores = coco_scores({i: refs[i] for i in candidates}, candidates, log_line)
    log_line(SPICE_NOTE)
    if args.json:
        print(json.dumps({"images": len(candidates), **scores}))
    else:
        print(f"{len(candidates)} images")
        print("\n".join(_table([(args.results.name, "-", scores)], COCO_COLUMNS)))
    return 0
