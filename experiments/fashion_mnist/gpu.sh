#!/usr/bin/env bash
# The GPU protocol (not yet run: no GPU has been available to this project): depth 58,
# euler / midpoint / rk4 / rk8 / rk8_adaptive / lm, seeds 0 1 2, the full 15-epoch recipe, bf16 autocast and
# channels_last, several runs at once on one GPU; then validate.py on the 10k test split. Then the Fig. 9
# analogue: depth 86 euler vs rk8 at 1x, 2x and 4x the recipe's learning rate (0.1), seed 0.
#
#   TRAIN_PY=path/to/timm/train.py DATA=folder/holding/FashionMNIST/raw bash experiments/fashion_mnist/gpu.sh
set -eu
: "${TRAIN_PY:?set TRAIN_PY to timm's train.py}" "${DATA:?set DATA to the folder holding FashionMNIST/raw}"
OUT=${OUT:-runs-gpu}
PARALLEL=${PARALLEL:-6}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"

train() {  # name run-name extra-train.py-flags...
  local name=$1 run=$2; shift 2
  python "$TRAIN_PY" -c "$ROOT/configs/fashion_mnist/$name.yaml" --data-dir "$DATA" --device cuda --workers 2 \
      --amp --amp-dtype bfloat16 --channels-last --output "$OUT" --experiment "$run" "$@" > "$OUT/$run.train.log" 2>&1
  horesnet run validate.py --data-dir "$DATA" --dataset torch/fashion_mnist --workers 2 \
      --checkpoint "$OUT/$run/model_best.pth.tar" --results-file "$OUT/$run.validate.csv" > "$OUT/$run.validate.log" 2>&1
}

jobs_running() { jobs -rp | wc -l; }
for seed in 0 1 2; do
  for scheme in euler midpoint rk4 rk8 rk8_adaptive lm; do
    while [ "$(jobs_running)" -ge "$PARALLEL" ]; do sleep 5; done
    train "horesnet58_$scheme" "horesnet58_$scheme-s$seed" --seed "$seed" &
  done
done
wait
for scheme in euler rk8; do
  for mult in 1 2 4; do
    while [ "$(jobs_running)" -ge "$PARALLEL" ]; do sleep 5; done
    train "horesnet86_$scheme" "horesnet86_$scheme-lr${mult}x-s0" --seed 0 \
        --lr "$(python -c "print(0.1 * $mult)")" &
  done
done
wait
