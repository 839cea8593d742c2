#!/bin/bash
# The README's 10-minute CPU figure (Training): transformer-1m from scratch for 10 minutes of wall time, with
# the recipe nslm used first (AdamW, 32 windows a step, learning rate 3e-3), with the next one (Muon at 1e-2 for
# every part, 8 windows a step, cosine decay), with the one after (as muon, the AdamW part at 3 x 1e-2; 8 windows)
# and with the defaults now (the same at 16 windows a step, shared out over one thread per core, the head's loss
# in row chunks), one after the other on an otherwise idle machine, then the plot and table. Every row runs the
# step of the nslm it is run with: the README's `batch8` figure (0.957) came from one pass on two threads, before
# the shards and the chunks; `--set train.batch_threads=1` drops the shards, not the chunks.
#     bash studies/cpu10.sh [DATA_FOLDER]      (default data/tinystories, what `make run` prepares)
# Run folders land in cpu10/; a run that finished is kept, so a second call only redoes what is missing.
set -eu
DATA=${1:-data/tinystories}
mkdir -p cpu10
run() {  # folder name, then nslm train arguments
  local name=$1; shift
  [ -f "cpu10/$name/status.json" ] && grep -q '"finished"' "cpu10/$name/status.json" && return
  rm -rf "cpu10/$name"
  python3 -m nslm train --preset transformer-1m --data "$DATA" --out "cpu10/$name" --device cpu --max-minutes 10 "$@"
}
run before --set train.optimizer=adamw --set train.batch_size=32 --set train.lr=0.003
run muon --set train.batch_size=8 --set train.adamw_lr_ratio=1 --set train.cooldown=null --set train.weight_decay=0.1
run batch8 --set train.batch_size=8
run now
python3 studies/cpu10_plot.py cpu10/before cpu10/muon cpu10/batch8 cpu10/now
