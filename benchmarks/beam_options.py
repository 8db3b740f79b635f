"""Beam-search options on the shipped scenes models: length normalisation on or off, finished
captions keeping their slot or leaving a shrinking beam (the authors' gen_sample), beam 3 and 5,
scored on 1,000 fresh test scenes (seed 2): BLEU-4, object F1, mean caption length in words.

    python benchmarks/beam_options.py [--n 1000] [--no-write]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import ROOT, parse, parser, publish, table  # noqa: E402
from caption.api import load  # noqa: E402
from caption.data.scenes import scene_set  # noqa: E402
from caption.metrics.evaluate import caption_set, score_captions  # noqa: E402
from caption.search import DecodeOptions  # noqa: E402


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=1000, help="test scenes (default: 1000)")
    args = parse(p)
    rows = []
    for name in ("scenes-soft.pt", "scenes-hard.pt"):
        model = load(ROOT / "checkpoints" / name, device="cpu")
        data = scene_set(args.n, "test", model.config.image_size)
        for beam in (3, 5):
            for norm in (True, False):
                for shrink in (False, True):
                    options = DecodeOptions(beam_size=beam, length_norm=norm, shrink_beam=shrink)
                    results, _ = caption_set(model, data, options)
                    s = score_captions(results, data)
                    words = sum(len(r.words) for r in results) / len(results)
                    default = beam == 3 and norm and not shrink
                    authors = beam == 5 and not norm and shrink
                    rows.append([name, beam, "on" if norm else "off", "shrinks" if shrink else "keeps slots",
                                 "default" if default else ("the authors'" if authors else ""),
                                 f"{s['bleu4']:.1f}", f"{s['object_f1']:.3f}", f"{words:.2f}"])
                    print(" | ".join(map(str, rows[-1])), flush=True)
    body = (f"{args.n} test scenes (seed 2), the shipped models, hard with the expected context.\n\n" +
            table(["model", "beam", "length norm", "finished captions", "", "BLEU-4", "object F1", "words"], rows))
    publish("beam-options", "Beam-search options on scenes", body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
