#!/usr/bin/env bash
# One arm of the docs/protocol.md family: 5-fold patient CV over the 23 train+val patients, p4m width 8, a fixed
# 8-epoch budget, the last (averaged, where the recipe has it) weights; writes OUT/oof.csv. The test patients are
# scored under the 8 D4 views once (their label changes come from the same views).
#   experiments/idc-cv-protocol/run_arm.sh DATASET OUT [recipe options]
# Rerun the same line to resume: finished folds are skipped, an interrupted one continues from its last epoch.
set -euo pipefail
data=$1; out=$2; shift 2
export NO_ALBUMENTATIONS_UPDATE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec histoeq sweep --data "$data" --out "$out" --models p4m --width 8 --fractions 1 --augment none --seeds 5 \
  --cv 5 --epochs 8 --patience 8 --select last --rotations 4 --flips --device cpu "$@"
