"""Trained captioners scored on fresh test scenes (seed 2, never used in training): BLEU-1..4,
object F1 (all scenes, 1-2 objects, 3-4 objects), attention correctness beside chance (for a
Transformer: its last layer's mean head, and its best head), attention entropy, decode time per
image, parameters and training minutes. The same numbers as `caption evaluate`, written to
BENCHMARKS.md.

    python benchmarks/scenes_models.py --model checkpoints/scenes-soft.pt --model checkpoints/scenes-hard.pt \
        --model checkpoints/scenes-transformer.pt --model runs/scenes-none.pt --minutes M1,M2,M3,M4

A hard-attention model gets a row per --hard-modes entry (its test-time context).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import parse, parser, publish, table  # noqa: E402
from caption.api import load  # noqa: E402
from caption.data.scenes import scene_set  # noqa: E402
from caption.metrics.evaluate import evaluate_captions  # noqa: E402
from caption.search import DecodeOptions  # noqa: E402


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--model", type=Path, action="append", required=True, help="checkpoint; repeat to compare")
    p.add_argument("--n", type=int, default=1000, help="test scenes (default: 1000)")
    p.add_argument("--beam", type=int, default=3, help="beam size (default: 3)")
    p.add_argument("--hard-modes", default="expected,argmax,sample",
                   help="test-time contexts of a hard model, a row each (default: expected,argmax,sample)")
    p.add_argument("--note", default="", help="a line printed under the table (how the models were trained)")
    p.add_argument("--minutes", default="", help="each model's training wall time in minutes, comma-separated "
                                                 "in --model order (a checkpoint does not record it)")
    args = parse(p)
    rows = []
    data = None
    minutes = args.minutes.split(",") if args.minutes else []
    for k, path in enumerate(args.model):
        model = load(path, device="cpu")
        if data is None:
            data = scene_set(args.n, "test", model.config.image_size)
        modes = args.hard_modes.split(",") if model.config.attention == "hard" else ["expected"]
        for mode in modes:
            s = evaluate_captions(model, data, DecodeOptions(beam_size=args.beam, hard_mode=mode, seed=0))
            name = path.name if model.config.attention != "hard" else f"{path.name} ({mode})"
            c = model.config
            kind = f"multi-head ({c.layers}x{c.heads})" if c.decoder == "transformer" else c.attention
            head = (f"{s['attention_best_head_mass']:.3f} (L{s['attention_best_head_layer']} "
                    f"H{s['attention_best_head']}, {s['attention_best_head_mass'] / s['attention_chance']:.1f}x)"
                    if "attention_best_head_mass" in s else "")
            params = sum(p.numel() for p in model.model.parameters())
            rows.append([name, kind, *(f"{s[f'bleu{n}']:.1f}" for n in range(1, 5)),
                         f"{s['object_f1']:.3f}", f"{s['object_f1_1-2']:.3f}", f"{s['object_f1_3-4']:.3f}",
                         f"{s['attention_mass']:.3f}", f"{s['attention_chance']:.3f}",
                         f"{s['attention_mass'] / s['attention_chance']:.1f}x",
                         f"{s['attention_argmax_in_box']:.3f}",
                         f"{s['attention_argmax_in_box'] / s['attention_chance']:.1f}x",
                         head, f"{s['attention_entropy']:.2f}", f"{s['decode_ms_per_image']:.1f}",
                         f"{params / 1e6:.2f} M", minutes[k] if k < len(minutes) else "?"])
            print(" | ".join(rows[-1]), flush=True)
    body = (f"{args.n} test scenes (seed 2), beam {args.beam}. Object F1 matches each generated mention "
            "(size, colour, shape) against the scene's objects; attention correctness is the mean alpha mass "
            "inside the named object's box at its colour and shape words, beside chance (box area / image "
            "area), and the share of those words whose argmax cell centre lies in the box (also as a multiple of "
            "chance). A Transformer's alpha is its last layer's mean over heads; its best head (of every "
            "layer) is scored alone beside it. A hard model is decoded with each test-time context: expected "
            "(the authors' choice), argmax location, sampled location (seed 0).\n\n" +
            table(["model", "attention", "B-1", "B-2", "B-3", "B-4", "object F1", "F1 1-2 obj", "F1 3-4 obj",
                   "alpha in box", "chance", "ratio", "argmax in box", "argmax ratio", "best head in box",
                   "entropy (nats)", "ms / image", "parameters", "train min"], rows))
    if args.note:
        body += "\n\n" + args.note
    publish("scenes-models", "Captioning built-in scenes: soft, hard and multi-head attention, and the "
            "no-attention ablation", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
