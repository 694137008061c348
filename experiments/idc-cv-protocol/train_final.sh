#!/usr/bin/env bash
# The candidate default of docs/protocol.md ("The shipped model"): p4m at WIDTH trained on all 23 pool patients
# (train + val, no validation) with the recipe the CV adopted and the same 8-epoch budget, last weights; scored on
# the 4 test patients patch-only and with the context kernel chosen on OOF (reported, deciding nothing); exported;
# with the operating point chosen on OOF (KERNEL and the THRESHOLD maximising pooled OOF balanced accuracy with it),
# then timed against today's default on a shared slide, the two files alternating, three times each.
#   experiments/idc-cv-protocol/train_final.sh DATASET WORK WIDTH KERNEL THRESHOLD [recipe options of the adopted recipe]
# Rerun the same line to resume an interrupted training.
set -euo pipefail
data=$1; work=$2; width=$3; kernel=$4; threshold=$5; shift 5
export NO_ALBUMENTATIONS_UPDATE=1
run=$work/p4m-w$width
if ! grep -qs '"status": "finished"' "$run/run.json"; then
  resume=(); [[ -f $run/last.pt ]] && resume=(--resume)
  histoeq train --data "$data" --model p4m --width "$width" --augment none --epochs 8 --batch-size 128 --lr 1e-3 \
    --weight-decay 1e-4 --select last --train-on train+val --seed 0 --device cpu --out "$run" "${resume[@]}" "$@"
fi
histoeq eval "$run" --data "$data" --split test --rotations 4 --flips --threshold "$threshold" --device cpu \
  --out "$work/test-patch" --overwrite
histoeq eval "$run" --data "$data" --split test --rotations 4 --flips --threshold "$threshold" --context "$kernel" \
  --device cpu --out "$work/test-$kernel" --overwrite
python experiments/idc-cv-protocol/test_at_threshold.py "$work/test-$kernel/predictions.csv" "$threshold" \
  "$work/test-per-patient.csv"
candidate=$work/idc-p4m-w$width.onnx
histoeq export "$run" --test-metrics "$work/test-patch/eval.json" --out "$candidate" --overwrite \
  --threshold "$threshold" --context "$kernel" --chosen-by "docs/protocol.md: pooled OOF balanced accuracy, 5-fold patient CV"
histoeq eval "$candidate" --data "$data" --split test --rotations 4 --flips --context "$kernel" --device cpu \
  --out "$work/test-onnx-$kernel" --overwrite
slide=${SLIDE:-../shared/data/idc/slides/9124.tiff}
for _ in 1 2 3; do
  for model in models/idc-se2.onnx "$candidate"; do
    histoeq bench predict "$slide" --model "$model" --device cpu
  done
done
