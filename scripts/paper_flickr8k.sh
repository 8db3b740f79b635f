#!/usr/bin/env bash
# Xu et al. 2015, Table 1, Flickr8k row: VGG19 conv5_4 features (14 x 14 x 512 at 224 px), then the
# soft and the hard model, each evaluated on the test split with coco-caption's scores (beam 3).
#   FLICKR8K=/data/flickr8k   (Flickr8k.token.txt, Flickr_8k.*Images.txt, Flicker8k_Dataset/)
#   VGG19=/weights/vgg19-dcbb9e9d.pth
set -euo pipefail
: "${FLICKR8K:?set FLICKR8K}" "${VGG19:?set VGG19}"
out=${OUT:-runs/flickr8k}
data=(--dataset flickr8k --data "$FLICKR8K")
caption features "${data[@]}" --encoder vgg19 --encoder-weights "$VGG19" --image-size 224 --grid 14 \
    --split train --split val --split test --out "$out/features" --workers 4
model=(--embed-dim 512 --hidden-dim 1000 --attn-dim 512 --dropout 0.5 --min-count 5 --max-words 30
       --epochs 20 --batch-size 64 --lr 4e-4 --lr-final 4e-5 --eval-beam 1)
caption train --features "$out/features" --attention soft --alpha-c 1 "${model[@]}" --out "$out/soft.pt"
caption train --features "$out/features" --attention hard "${model[@]}" --out "$out/hard.pt"
for m in soft hard; do
    caption evaluate --model "$out/$m.pt" "${data[@]}" --split test --beam 3 --workers 4 \
        --results "$out/$m-test-results.json"
done
