#!/usr/bin/env bash
# Copy the finished folds of CV arms into the results folder (records only: cell.json, run.json, eval.json,
# metrics.jsonl, val_predictions.csv; no weights), so an interrupted arm resumes from git:
#   experiments/idc-cv-protocol/keep_folds.sh WORK RESULTS ARM...      # WORK/ARM -> RESULTS/ARM
#   experiments/idc-cv-protocol/keep_folds.sh --restore WORK RESULTS ARM...   # RESULTS/ARM -> WORK/ARM
# A finished cell (cell.json present) is skipped by run_arm.sh on resume; WORK/ARM/oof.csv (the folds'
# val_predictions.csv together) is rewritten from them by the next run_arm.sh call, which trains only what is missing.
set -euo pipefail
restore=0
if [[ ${1:-} == --restore ]]; then restore=1; shift; fi
work=$1; results=$2; shift 2
for arm in "$@"; do
  if (( restore )); then src=$results/$arm; dst=$work/$arm; else src=$work/$arm; dst=$results/$arm; fi
  for cell in "$src"/runs/*/cell.json; do
    [[ -e $cell ]] || continue
    run=$(dirname "$cell"); name=$(basename "$run")
    mkdir -p "$dst/runs/$name"
    for f in cell.json run.json eval.json metrics.jsonl val_predictions.csv; do
      [[ -e $run/$f ]] && cp -p "$run/$f" "$dst/runs/$name/$f"
    done
  done
done
