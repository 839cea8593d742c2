#!/bin/bash
# The GPU part of docs/study.md (section 8) and of the README's GPU benchmarks, as it ran on one H200 in two
# sittings of about 6 minutes each (2026-11-27). Run from the repository root on a CUDA machine:
#     bash studies/gpu.sh [DATA_FOLDER]        (default data/ts-dev: the sample with its dev split)
# Benches run alone on the GPU; the trainings of one batch run side by side (each then gets a share of the
# GPU, so their tokens/s are not benchmarks). Run folders land in gpu/runs*, logs in gpu/logs*; at the end
# studies/gpu_summary.py rewrites docs/study/gpu/runs.json and docs/study/q8-gpu.png and prints the table.
set -u
DATA=${1:-data/ts-dev}
mkdir -p gpu/logs gpu/runs gpu/runs2
# AdamW, and 3e-3 for the Transformer where a line sets no rate: the recipe these figures were measured with
# (transformer-1m has since moved to Muon at 1e-2; README "Training")
bench() { python3 -m nslm bench train --device cuda --optimizer adamw --json "$@" 2>&1 | tee -a gpu/logs/bench.txt; }
bench --preset transformer-1m --batch-size 16 --steps 40 --warmup 5
bench --preset lstm-1m --batch-size 32 --steps 30 --warmup 5
bench --preset gru-1m --batch-size 32 --steps 30 --warmup 5 --dtype bf16
bench --preset lstm-1m --batch-size 512 --steps 20 --warmup 3 --dtype bf16
bench --preset transformer-1m --batch-size 512 --steps 20 --warmup 3 --dtype bf16
bench --preset transformer-1m --batch-size 16 --steps 60 --warmup 5 --dtype bf16 --compile
bench --preset transformer-1m --batch-size 512 --steps 20 --warmup 3 --dtype bf16 --compile

PIDS=()
train() {  # folder name, then nslm train arguments; runs in the background
  local name=$1; shift
  local pin=(--set train.optimizer=adamw)
  [[ " $* " == *" transformer-1m "* && " $* " != *"train.lr="* ]] && pin+=(--set train.lr=0.003)
  python3 -m nslm train --data "$DATA" --out "gpu/$name" --device cuda --set train.threads=2 "${pin[@]}" "$@" \
    > "gpu/logs/${name//\//-}.log" 2>&1 &
  PIDS+=($!)
}
# first sitting: 3.5 minutes each, seven side by side
train runs/tf-b32 --preset transformer-1m --compile --max-minutes 3.5 --set train.eval_interval=500
train runs/tf-b128 --preset transformer-1m --compile --max-minutes 3.5 --set train.batch_size=128 --set train.lr=0.006 \
  --set train.warmup_steps=100 --set train.eval_interval=125
train runs/tf-b32-drop --preset transformer-1m --compile --max-minutes 3.5 --set model.dropout=0.1 --set train.eval_interval=500
train runs/gru-14m --preset gru-1m --max-tokens 14000000
train runs/lstm-14m --preset lstm-1m --max-tokens 14000000
train runs/gru-long --preset gru-1m --max-minutes 3.5 --set train.eval_interval=500
train runs/lstm-long --preset lstm-1m --max-minutes 3.5 --set train.eval_interval=500
wait "${PIDS[@]}"; PIDS=()
# second sitting: 4 minutes each, five side by side, then one run alone for the real training loop's rate
train runs2/tf-drop10 --preset transformer-1m --compile --max-minutes 4 --set model.dropout=0.1 --set train.eval_interval=500
train runs2/tf-drop20 --preset transformer-1m --compile --max-minutes 4 --set model.dropout=0.2 --set train.eval_interval=500
train runs2/tf-drop15 --preset transformer-1m --compile --max-minutes 4 --set model.dropout=0.15 --set train.eval_interval=500
train runs2/gru-drop10 --preset gru-1m --max-minutes 4 --set model.dropout=0.1 --set train.eval_interval=500
train runs2/gru-long2 --preset gru-1m --max-minutes 4 --set train.eval_interval=500
wait "${PIDS[@]}"; PIDS=()
train runs2/tf-epoch --preset transformer-1m --compile --max-tokens 470000000 --set train.batch_size=512 \
  --set train.lr=0.006 --set train.warmup_steps=100 --set train.eval_interval=100000 --set train.log_interval=50
wait "${PIDS[@]}"
G=gpu/runs; G2=gpu/runs2
python3 studies/gpu_summary.py $G/tf-b32 $G/tf-b128 $G/tf-b32-drop $G2/tf-drop10 $G2/tf-drop15 $G2/tf-drop20 \
  $G2/tf-epoch $G/lstm-14m $G/gru-14m $G/lstm-long $G/gru-long $G2/gru-long2 $G2/gru-drop10
