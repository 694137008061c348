#!/usr/bin/env bash
# The IDC sweep at the scale two CPU cores allow: CNN width 8 (18.7k parameters, the G-CNNs matched to
# it), 3 epochs per cell, 3 seeds. Ordered so the cells the claims need finish first; every step resumes, so
# rerunning this script continues an interrupted sweep. Usage: experiments/idc-cpu-w8/cpu_sweep.sh DATASET OUT
# SEEDS=N FIRST_SEED=S run seeds S..S+N-1 instead of 0..2, so seeds can be added later or split over processes
# (one OUT each, gathered by symlinking their runs/ into one folder and `histoeq sweep --report-only`).
set -euo pipefail
data=${1:?dataset folder}
out=${2:?sweep folder}
common=(--data "$data" --out "$out" --fractions 1,0.5,0.25,0.1 --seeds "${SEEDS:-3}" --first-seed "${FIRST_SEED:-0}"
        --epochs 3 --patience 3
        --width 8 --batch-size 128 --rotations 8 --device cpu)
histoeq sweep --models cnn --augment none,rot90 "${common[@]}"
histoeq sweep --models p4m,se2 --augment none "${common[@]}"
histoeq sweep --models se2 --augment rot90 "${common[@]}"
# D4 augmentation cannot change the loss of a D4-invariant network: p4m's rot90 cells repeat its none cells.
histoeq sweep --models p4m --augment rot90 "${common[@]}"
