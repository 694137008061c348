#!/usr/bin/env bash
# Gather the finished cells of several sweep folders (e.g. seeds run as separate processes with
# `SEEDS=1 FIRST_SEED=3 experiments/idc-cpu-w8/cpu_sweep.sh DATA OUT-s3`) into one folder and summarise them all:
#   scripts/gather_sweeps.sh OUT SWEEP_DIR...
# OUT/runs holds symlinks to the cells (a cell present in two folders: the later folder wins); then
# `histoeq sweep --out OUT --report-only` writes summary.csv, summary_groups.csv, claims.csv and the plots.
set -euo pipefail
out=${1:?output folder}; shift
[ $# -gt 0 ] || { echo "usage: $0 OUT SWEEP_DIR..." >&2; exit 2; }
mkdir -p "$out/runs"
for sweep in "$@"; do
  for cell in "$sweep"/runs/*/; do
    [ -f "$cell/cell.json" ] && ln -sfn "$(realpath "$cell")" "$out/runs/$(basename "$cell")"
  done
done
histoeq sweep --out "$out" --report-only
