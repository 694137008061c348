#!/usr/bin/env bash
# The one prepared run on a lent GPU machine (device tool), carried with .work/idc-pack (JPEG q85, to fit the
# 64 MiB limit: `python experiments/lent-gpu/pack_dataset.py pack .work/idc .work/idc-pack 85`) and .work/wheels-gpu
# (`pip download --no-deps` of the venv's albumentations, albucore, simsimd, stringzilla, pydantic, pydantic-core,
# annotated-types, typing-inspection and shapely, at the venv's versions, for the device's Python 3.12):
#   run(command="BUDGET=420 bash experiments/lent-gpu/gpu_run.sh", carry=[".work/idc-pack", ".work/wheels-gpu"], timeout_s=560)
#
# Up to three jobs can share the GPU, every process time-boxed to BUDGET seconds; what finished comes back in $OUT.
#
# 1. CANDIDATES (none by default): runs for the shipped model, "model:width:augment:seed" each, on the full train
#    split. Selection rule, fixed before any test number is seen: the candidate with the highest validation AUC
#    (best.pt is already the epoch with the best validation AUC); a tie within 0.002 goes to the smaller model.
#    The test split is not touched here: the chosen checkpoint is exported and evaluated on the original (not
#    JPEG-packed) data afterwards, and the other candidates' test numbers are reported next to it, not used to
#    choose.
# 2. The production-width IDC sweep (fractions 1, 0.25, 0.1, 0.5 in that order so a cut-off loses the fraction the
#    claims need least; 3 seeds, EPOCHS epochs), gathered into one folder with `histoeq sweep --report-only`. p4m
#    is exactly D4-invariant, so D4 (rot90) augmentation cannot change its loss: its rot90 cells are not run.
#    Cells this machine already has (p4m fraction 1, se2 seed 0 at fraction 1) are rerun here: the 64 MiB limit
#    leaves no room to carry them; gathering locally with .work/gpu3/sweep keeps one of each pair.
#
# Measured on an H200, do not repeat: 20 processes on one GPU are far slower than their sum. p4m at
# width 32 trains at 4 s/epoch alone but took 52-77 s/epoch among 20 processes and 18 s/epoch among 3 (with
# stain augmentation, which runs per patch on the CPU); the cnn sweep cells took 6 minutes, the G-CNN cells did
# not finish in 7. Run few processes, and give the G-CNN cells their own budget.
#
# Rehearse on CPU before spending device time:
#   DEVICE=cpu EXTRA="--max-steps 1" EPOCHS=1 FINAL_EPOCHS=1 BUDGET=300 CANDIDATES=cnn:8:stain:0 \
#     SWEEP_JOBS="cnn:none cnn:rot90" OUT=/tmp/rehearse WORK=/tmp/rehearse-work bash experiments/lent-gpu/gpu_run.sh
# (with WORK/idc a small dataset, e.g. a symlink to one made by tests/test_train_helpers.small_idc_fixture_path).
set -u
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=1 MPLBACKEND=Agg
BUDGET=${BUDGET:-430}
EPOCHS=${EPOCHS:-6}
FINAL_EPOCHS=${FINAL_EPOCHS:-16}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
WORK=${WORK:-/tmp/histoeq-gpu}
H="python -m histoeq"
start=$(date +%s)
mkdir -p "$OUT" "$WORK/final" "$WORK/sweep"
WHEELS=${WHEELS-.work/wheels-gpu}  # empty: install nothing (a CPU rehearsal in the project's own venv)
if [ -n "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  python -m pip install --no-deps --no-index --force-reinstall -q "$WHEELS"/*.whl 2>&1 | tail -5; pip list 2>/dev/null | grep -i -E "albu|numkong|simsimd|stringzilla"
fi
python -c "import albumentations, shapely; print('albumentations', albumentations.__version__)" || exit 3
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"
[ -d "$WORK/idc" ] || python experiments/lent-gpu/pack_dataset.py unpack .work/idc-pack "$WORK/idc" || exit 4
echo "ready at $(( $(date +%s) - start )) s"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null

# NORMALISE (none by default): methods of `histoeq normalise`, each making $WORK/idc-METHOD from the unpacked
# patches (reference from the training patients); a candidate or CV job names it as its data.
for method in ${NORMALISE:-}; do
  $H normalise "$WORK/idc" --method "$method" --out "$WORK/idc-$method" > "$WORK/normalise-$method.log" 2>&1 \
    || { cat "$WORK/normalise-$method.log"; exit 5; }
  echo "normalised ($method) at $(( $(date +%s) - start )) s"
done

left() { echo $(( BUDGET - ($(date +%s) - start) )); }
candidate() {  # model width augment seed data epochs batch; the run folder is named after all but the batch
  local name="$1-w$2-$3-s$4-$5-e$6" budget; budget=$(left)
  [ "$budget" -gt 30 ] || { echo "candidate $name not started: budget spent"; return; }
  timeout "$budget" $H train --data "$WORK/$5" --model "$1" --width "$2" --augment "$3" --seed "$4" \
    --epochs "$6" --patience 6 --batch-size "$7" --workers 2 --device "$DEVICE" $EXTRA \
    --out "$WORK/final/$name" > "$WORK/final/$name.log" 2>&1
  echo "candidate $name exit $? at $(( $(date +%s) - start )) s"
}
# CANDIDATES (none by default): runs on the full train split, "model:width:augment:seed[:data[:epochs[:batch]]]"
# each (data idc, FINAL_EPOCHS, batch 512 unless given); space-separated entries run in parallel, comma-separated
# ones in order within one process, each time-boxed to what is left of BUDGET.
# The first selection ran CANDIDATES="p4m:32:none:0 p4m:32:stain:0 p4m:32:stain:1 p4m:32:stain:2 p4m:48:stain:0".
CANDIDATES=${CANDIDATES-}
for chain in $CANDIDATES; do
  (
    IFS=, read -r -a entries <<< "$chain"
    for c in "${entries[@]}"; do
      IFS=: read -r model width augment seed data epochs batch <<< "$c"
      candidate "$model" "$width" "$augment" "$seed" "${data:-idc}" "${epochs:-$FINAL_EPOCHS}" "${batch:-512}"
    done
  ) &
done

# Sweep B ran SWEEP_JOBS="cnn:none cnn:rot90 p4m:none se2:none se2:rot90" SEEDS="0 1 2" (15 processes) and
# finished the cnn cells (docs/results/idc-h200-w32); the defaults now run the G-CNN cells, one process per
# model/augmentation with all three seeds in it (SEEDS=all), 3 processes in all.
for job in ${SWEEP_JOBS-p4m:none se2:none se2:rot90}; do
  m=${job%%:*}; a=${job##*:}
  for seed in ${SEEDS:-all}; do
    # Each folder is its own sweep; they are gathered below.
    (
      if [ "$seed" = all ]; then dir="$WORK/sweep/$m-$a"; seeds=(--seeds 3)
      else dir="$WORK/sweep/$m-$a-s$seed"; seeds=(--seeds 1 --first-seed "$seed"); fi
      mkdir -p "$dir/runs"
      timeout "$BUDGET" nice -n 5 $H sweep --data "$WORK/idc" --models "$m" --augment "$a" \
        --fractions 1,0.25,0.1,0.5 "${seeds[@]}" --epochs "$EPOCHS" --patience 3 \
        --batch-size 512 --rotations 8 --device "$DEVICE" $EXTRA --out "$dir" > "$dir.log" 2>&1
      echo "sweep $(basename "$dir") exit $? at $(( $(date +%s) - start )) s"
    ) &
  done
done
# 3. CV_JOBS (none by default): recipe selection by 5-fold patient cross-validation over the 23 train+val
#    patients ("model:augment[:data]" each, width CV_WIDTH (32), fraction 1, CV_EPOCHS (EPOCHS) epochs, batch
#    CV_BATCH (512), CV_SEEDS (5) seeds: seed s on fold s mod 5), one process per job. Compare recipes by the
#    val AUC over folds in summary_groups.csv (test is evaluated too, but is not for choosing). E.g.
#    CV_JOBS="p4m:none p4m:stain" SWEEP_JOBS="" for the question the previous model's card left open.
#    LATER_CV_JOBS, with LATER_CV_WIDTH etc., start once everything above has finished, with what is left of
#    BUDGET (processes sharing the GPU slow each other down more than their sum).
cv_jobs() {  # jobs width seeds epochs batch
  for job in $1; do
    IFS=: read -r m a data <<< "$job"; data=${data:-idc}
    (
      dir="$WORK/cv/$m-$a-$data-w$2"; mkdir -p "$dir/runs"
      timeout "$(left)" nice -n 5 $H sweep --data "$WORK/$data" --models "$m" --augment "$a" --fractions 1 \
        --seeds "$3" --cv 5 --width "$2" --epochs "$4" --patience 3 --batch-size "$5" --rotations 8 \
        --device "$DEVICE" $EXTRA --out "$dir" > "$dir.log" 2>&1
      echo "cv $(basename "$dir") exit $? at $(( $(date +%s) - start )) s"
    ) &
  done
}
cv_jobs "${CV_JOBS:-}" "${CV_WIDTH:-32}" "${CV_SEEDS:-5}" "${CV_EPOCHS:-$EPOCHS}" "${CV_BATCH:-512}"
wait
echo "first phase done at $(( $(date +%s) - start )) s"
if [ -n "${LATER_CV_JOBS:-}" ] && [ "$(left)" -gt 60 ]; then
  cv_jobs "$LATER_CV_JOBS" "${LATER_CV_WIDTH:-32}" "${LATER_CV_SEEDS:-5}" "${LATER_CV_EPOCHS:-$EPOCHS}" \
    "${LATER_CV_BATCH:-512}"
fi
wait
echo "training done at $(( $(date +%s) - start )) s"
mkdir -p "$WORK/sweep/all/runs"
for d in "$WORK"/sweep/*-*/runs/*/; do ln -sfn "$d" "$WORK/sweep/all/runs/$(basename "$d")"; done
$H sweep --out "$WORK/sweep/all" --report-only > "$WORK/sweep/all.log" 2>&1
tar -C "$WORK" -czf "$OUT/sweep.tar.gz" --exclude='*.pt' --exclude=sweep/all/runs sweep
tar -C "$WORK" -czf "$OUT/final.tar.gz" --exclude='last.pt' --exclude=fraction_ids.json final
for d in "$WORK"/cv/*/; do  # a time-boxed sweep that was cut off wrote no summary of its finished runs
  [ -d "$d/runs" ] && $H sweep --out "$d" --report-only > "${d%/}-report.log" 2>&1
done
[ -d "$WORK/cv" ] && tar -C "$WORK" -czf "$OUT/cv.tar.gz" --exclude='*.pt' --exclude=fraction_ids.json cv
ls -la "$OUT"
for f in "$WORK"/sweep/all.log "$WORK"/final/*.log "$WORK"/cv/*.log; do [ -f "$f" ] && { echo "== $f"; tail -c 250 "$f"; }; done
echo "all done at $(( $(date +%s) - start )) s"
