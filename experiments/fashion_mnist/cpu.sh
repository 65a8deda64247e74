#!/usr/bin/env bash
# The CPU protocol behind RESULTS.md: depth 10, euler / midpoint / rk4, seed 42, timm's own train.py
# with configs/fashion_mnist/ (the 15-epoch recipe cut to $EPOCHS epochs, the same for every scheme),
# then validate.py on the 10k test split through `horesnet run`, which fills the model and data flags
# from the checkpoint's train.py record.
#
#   TRAIN_PY=path/to/timm/train.py DATA=folder/holding/FashionMNIST/raw bash experiments/fashion_mnist/cpu.sh
#
# DATA is torchvision's layout (DATA/FashionMNIST/raw/*-ubyte, gunzipped from the Debian package
# dataset-fashion-mnist). Outputs go to $OUT (default runs-cpu/): a train.py folder per model, its log,
# the validate.py results and the seconds train.py took.
set -eu
: "${TRAIN_PY:?set TRAIN_PY to timm's train.py}" "${DATA:?set DATA to the folder holding FashionMNIST/raw}"
EPOCHS=${EPOCHS:-3}
SEED=${SEED:-42}
OUT=${OUT:-runs-cpu}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$OUT"
for scheme in ${SCHEMES:-euler midpoint rk4}; do
  name=horesnet10_$scheme
  run=$name-e$EPOCHS-s$SEED
  start=$(date +%s)
  python "$TRAIN_PY" -c "$ROOT/configs/fashion_mnist/$name.yaml" --data-dir "$DATA" --device cpu --workers 0 \
      --no-prefetcher --epochs "$EPOCHS" --seed "$SEED" --output "$OUT" --experiment "$run" --log-interval 100 \
      > "$OUT/$name.train.log" 2>&1
  echo "$name train_seconds $(( $(date +%s) - start ))" >> "$OUT/times.txt"
  horesnet run validate.py --data-dir "$DATA" --dataset torch/fashion_mnist --device cpu --workers 0 \
      --checkpoint "$OUT/$run/model_best.pth.tar" --results-file "$OUT/$name.validate.csv" > "$OUT/$name.validate.log" 2>&1
done
