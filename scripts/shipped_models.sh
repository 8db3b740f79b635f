#!/usr/bin/env bash
# The commands that made the shipped scenes models (checkpoints/) and the no-attention ablation of
# BENCHMARKS.md (their wall times are there). Run them one after the other, each alone on the machine.
set -euo pipefail
out=${1:-runs}
caption train --dataset scenes --attention soft --alpha-c 0 --dropout 0 --out "$out/scenes-soft.pt"
caption train --dataset scenes --attention hard --alpha-c 0 --dropout 0 --reward to-go --expected-warmup 1 \
    --out "$out/scenes-hard.pt"
caption train --dataset scenes --decoder transformer --alpha-c 0 --dropout 0 --out "$out/scenes-transformer.pt"
caption train --dataset scenes --attention none --alpha-c 0 --dropout 0 --out "$out/scenes-none.pt"
python benchmarks/scenes_models.py --model "$out/scenes-soft.pt" --model "$out/scenes-hard.pt" \
    --model "$out/scenes-transformer.pt" --model "$out/scenes-none.pt"
# the shipped date model: the book's split, the epoch chosen on a tenth of its training part,
# the test dates decoded once (benchmarks/seq2seq_date.py gives three seeds)
caption seq2seq train --data ../shared/data/date.txt --out "$out/date.pt"
# the Transformer against the LSTM on the same task, three seeds each (BENCHMARKS.md)
python benchmarks/date_transformer.py
