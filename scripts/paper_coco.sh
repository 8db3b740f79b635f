#!/usr/bin/env bash
# Xu et al. 2015, Table 1, COCO row, on Karpathy's splits (113,287 train with restval, 5,000 val,
# 5,000 test): VGG19 features, soft and hard attention, coco-caption scores on the test split.
#   COCO=/data/coco           (train2014/ and val2014/ image folders)
#   KARPATHY=/data/dataset_coco.json
#   VGG19=/weights/vgg19-dcbb9e9d.pth
set -euo pipefail
: "${COCO:?set COCO}" "${KARPATHY:?set KARPATHY}" "${VGG19:?set VGG19}"
out=${OUT:-runs/coco}
data=(--dataset karpathy --data "$KARPATHY" --images "$COCO")
caption features "${data[@]}" --encoder vgg19 --encoder-weights "$VGG19" --image-size 224 --grid 14 \
    --split train --split val --split test --out "$out/features" --workers 8 --batch-size 64
# the authors' COCO model and training (docs/paper.md); hard attention with capgen's own scaling
model=(--recipe capgen-coco --min-count 1 --max-words 30 --epochs 10 --captions-per-image 0 --eval-beam 1
       --workers 4)
caption train --features "$out/features" --attention soft "${model[@]}" --out "$out/soft.pt"
caption train --features "$out/features" --attention hard --reinforce-scale capgen --entropy-weight 0 \
    "${model[@]}" --out "$out/hard.pt"
for m in soft hard; do   # the authors' generate_caps.py: k = 5, no length normalisation, a shrinking beam
    caption evaluate --model "$out/$m.pt" "${data[@]}" --split test --beam 5 --no-length-norm --shrink-beam \
        --workers 8 --results "$out/$m-test-results.json"
done
