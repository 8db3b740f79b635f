#!/usr/bin/env bash
# The seed classifier on IMDB (Maas et al. 2011), as ilivans/tf-rnn-attention trains it: a 10,000-word
# vocabulary, reviews cut to 250 tokens, embedding 100, bi-GRU 150 per direction, attention 50, dropout
# keeping 0.8, Adam 1e-3, batch 256, 3 epochs; those are caption classify's defaults. The epoch is
# chosen on a tenth of train/ held out, and test/ (25,000 reviews) is classified once at the end.
# ACLIMDB: the folder aclImdb_v1.tar.gz unpacks to (nothing is downloaded here).
set -euo pipefail
data=${ACLIMDB:-aclImdb}     # the folder with train/ and test/, each with pos/ and neg/
out=${1:-runs}
caption classify train --data "$data" --out "$out/imdb.pt"
caption classify evaluate --data "$data" --model "$out/imdb.pt" --json
caption classify explore --model "$out/imdb.pt" --out "$out/imdb-explore.html" \
    "One of the best films I have seen in years. The acting was superb." \
    "I wanted to like it, but the plot was a mess and the ending made no sense."
