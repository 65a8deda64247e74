#!/usr/bin/env bash
# The GPU protocol (not yet run: no GPU has been lent to this project): the CPU protocol's queue (the same
# held-out split, recipe, 8 epochs, seeds, order and learning-rate sweep) at the paper's width 64, several
# runs at once on one GPU with bf16 autocast and channels_last, then validate.py on the 10k test split.
# Outputs go to $OUT/runs-gpu (checkpoints to $WORK); results.py --runs reads them.
#
#   TRAIN_PY=path/to/timm/train.py DATA=folder/written/by/split.py bash experiments/fashion_mnist/gpu.sh
#
# Before the whole grid, look at the first minute of one run's throughput (its train.log in runs-gpu):
# PARALLEL runs share the GPU, each with 3 loader workers and 2 CPU threads.
set -eu
: "${TRAIN_PY:?set TRAIN_PY to timm's train.py}" "${DATA:?set DATA to the folder split.py wrote}"
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE}
python "$HERE/run_queue.py" --data "$DATA" --work "${WORK:-/tmp/horesnet-gpu-runs}" --train-py "$TRAIN_PY" \
    --device cuda --width 64 --parallel "${PARALLEL:-6}" --threads 2 --runs "$OUT/runs-gpu" "$@"
