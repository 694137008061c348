#!/usr/bin/env bash
# Macenko normalisation for the shipped se2 recipe, judged on 23 validation patients.
#
# Why: README "E" tried per-patient stain normalisation with the width-8 CNN under the 5-fold patient CV; Macenko
# failed the rule on the validation patients (mean delta balanced accuracy -0.015, better in 2 of 5 folds) while
# it was ahead on the 4 test patients in all 5 fold models (+0.040 AUC). The shipped family is se2, not the CNN,
# and 5 fold models of one seed each are noisy. It ran with a lent GPU, where the se2 width-8 recipe costs
# seconds per run, so the same question is asked of the shipped recipe with two models per fold.
#
# The rule, written and committed before any of the runs it judges was trained (GPU run:
# experiments/lent-gpu/gpu_run.sh with the settings in the command at the end of this header):
#   Step 1, on validation patients only. The 5-fold patient CV over the 23 train+val patients of se2 C8 width 8,
#   the shipped recipe (3 epochs, batch 128, AdamW 1e-3, no augmentation), seeds 0-9 (seed s validates on fold
#   s mod 5: two models per fold), trained on the GPU from the JPEG-packed patches, once as they are ("none") and
#   once Macenko-normalised (`histoeq normalise --method macenko`, reference from the training patients). Best
#   epoch by validation AUC; runs paired by seed; only seeds finished in both arms count, and every fold must be
#   covered by at least one pair, else the question stays undecided (= not adopted). Macenko is adopted iff
#   mean delta balanced accuracy > 0, delta balanced accuracy > 0 in at least 60% of the pairs (6 of 10), and
#   mean delta AUC >= -0.005 (README E's rule: 3 of 5 there).
#   Step 2, only if adopted: the candidate is the mirror-averaged mean (`histoeq export --invariant-to d4`) of six
#   se2 C8 width-8 members, seeds 3-8, the shipped recipe on the Macenko-normalised packed patches of the train
#   split (trained in the same GPU run; all six must have finished). It replaces models/idc-se2.onnx iff, on the
#   original (not JPEG) validation patches, each patient normalised with the members' reference, at threshold
#   0.5 with nothing tuned: AUC >= 0.9363 and balanced accuracy >= 0.8633 (the shipped model's 0.9413 / 0.8683
#   less 0.005, as in E's step 2: the CV has already judged normalisation on more patients than the 3 of the
#   validation split). Test figures (patches at 8 angles, the 4 test slides) are computed after the decision and
#   reported either way; they decide nothing.
#   AMENDMENT, committed after the GPU run and step 1's verdict (Macenko adopted), before any valid figure of a
#   candidate was seen: the six members trained on the GPU cannot be evaluated here. se2's steerable filter basis
#   was orthonormalised with an SVD whose singular-vector signs depend on the LAPACK build (numpy 2.5.2 there,
#   2.4.6 here), so their coefficients make other filters on this machine (validation AUC 0.25 here against 0.92
#   logged on the device: a bug, fixed in histoeq/nn/kernels.py since). Step 1 is unaffected: its runs
#   were trained and evaluated on the device. The candidate is therefore the same recipe (se2 C8 width 8, seeds
#   3-8, 3 epochs, batch 128, AdamW 1e-3, no augmentation) trained on this machine's CPU from the original PNG
#   patches, Macenko-normalised with `histoeq normalise --method macenko` (reference from the training
#   patients); the gate is unchanged.
#   Reported, deciding nothing: the same CV at production width (se2 default width, 6 epochs, batch 512, seeds
#   0-4), none vs Macenko, run on the GPU after step 1's runs with what is left of the time box.
#
# GPU run (device tool; carry .work/idc-pack and .work/wheels-gpu):
#   NORMALISE=macenko CV_JOBS="se2:none se2:none:idc-macenko" CV_WIDTH=8 CV_SEEDS=10 CV_EPOCHS=3 CV_BATCH=128 \
#   CANDIDATES="se2:8:none:3:idc-macenko:3:128,se2:8:none:4:idc-macenko:3:128,se2:8:none:5:idc-macenko:3:128,\
#   se2:8:none:6:idc-macenko:3:128,se2:8:none:7:idc-macenko:3:128,se2:8:none:8:idc-macenko:3:128" \
#   LATER_CV_JOBS="se2:none se2:none:idc-macenko" LATER_CV_WIDTH=32 LATER_CV_SEEDS=5 LATER_CV_EPOCHS=6 \
#   LATER_CV_BATCH=512 SWEEP_JOBS="" BUDGET=470 bash experiments/lent-gpu/gpu_run.sh
#
# Usage: experiments/idc-cv-se2-macenko/ship_se2_macenko.sh GPU_FILES IDC_DATASET (repository root, venv active), where GPU_FILES holds
# the run's cv.tar.gz and final.tar.gz. Prints the verdicts; copying a shipped candidate into models/ is by hand.
set -euo pipefail
files=${1:?folder with the GPU run\'s cv.tar.gz and final.tar.gz}
data=${2:?dataset folder made by histoeq import}
work=.work/gpu7
mkdir -p "$work"
[[ -d "$work/cv" ]] || tar -C "$work" -xzf "$files/cv.tar.gz"
[[ -d "$work/final" ]] || tar -C "$work" -xzf "$files/final.tar.gz"

python - "$work/cv/se2-none-idc-w8/runs" "$work/cv/se2-none-idc-macenko-w8/runs" <<'PY'
import json, sys
from pathlib import Path

def finished(run: Path) -> bool:
    return (run / "run.json").is_file() and json.loads((run / "run.json").read_text()).get("status") == "finished"

def best(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max(rows, key=lambda r: r["val_auc"])

none_runs, macenko_runs = Path(sys.argv[1]), Path(sys.argv[2])
d_bacc, d_auc, folds = [], [], set()
for seed in range(10):
    old, new = none_runs / f"se2_none_f1_s{seed}", macenko_runs / f"se2_none_f1_s{seed}"
    if not (finished(old) and finished(new)):
        print(f"seed {seed}: not finished in both arms, left out")
        continue
    o, n = best(old), best(new)
    d_bacc.append(n["val_balanced_accuracy"] - o["val_balanced_accuracy"])
    d_auc.append(n["val_auc"] - o["val_auc"])
    folds.add(seed % 5)
    print(f"seed {seed} (fold {seed % 5}): val AUC {o['val_auc']:.4f} -> {n['val_auc']:.4f}, balanced accuracy "
          f"{o['val_balanced_accuracy']:.4f} -> {n['val_balanced_accuracy']:.4f}")
if len(folds) < 5:
    print(f"UNDECIDED: folds covered {sorted(folds)}; Macenko not adopted")
    sys.exit(1)
k = len(d_bacc)
mean_b, mean_a, wins = sum(d_bacc) / k, sum(d_auc) / k, sum(d > 0 for d in d_bacc)
ok = mean_b > 0 and wins >= 0.6 * k and mean_a >= -0.005
print(f"macenko: mean delta balanced accuracy {mean_b:+.4f} (better in {wins}/{k}), mean delta AUC {mean_a:+.4f}: "
      f"{'ADOPTED' if ok else 'NOT ADOPTED'}")
sys.exit(0 if ok else 1)
PY

# Step 2 (as amended above): the members, trained here; a rerun resumes.
norm=.work/idc-macenko
[[ -f "$norm/meta.json" ]] || histoeq normalise "$data" --method macenko --out "$norm"
members=()
for seed in 3 4 5 6 7 8; do
  run="$work/local/se2-w8-s$seed"
  if ! grep -qs '"status": "finished"' "$run/run.json"; then
    resume=(); [[ -f "$run/last.pt" ]] && resume=(--resume)
    histoeq train --data "$norm" --model se2 --width 8 --augment none --fraction 1 --epochs 3 \
      --batch-size 128 --lr 1e-3 --weight-decay 1e-4 --patience 3 --seed "$seed" --device cpu --out "$run" \
      "${resume[@]}"
  fi
  members+=("$run")
done
histoeq export "${members[@]}" --invariant-to d4 --out "$work/candidate.onnx"
histoeq eval "$work/candidate.onnx" --data "$data" --split val --rotations 1 --device cpu --out "$work/val"
set +e
python - "$work/val/eval.json" <<'PY'
import json, sys
view = next(v for v in json.load(open(sys.argv[1]))["runs"][0]["views"] if v["angle"] == 0 and not v["mirrored"])
auc, bacc = view["auc"], view["balanced_accuracy"]
ok = auc >= 0.9363 and bacc >= 0.8633
print(f"candidate on validation: AUC {auc:.4f}, balanced accuracy {bacc:.4f}: {'SHIP' if ok else 'KEEP the default'}")
sys.exit(0 if ok else 1)
PY
verdict=$?
set -e
histoeq eval "$work/candidate.onnx" --data "$data" --split test --rotations 8 --device cpu --out "$work/test"
[ "$verdict" = 0 ] && echo "rule passed: copy the members to models/ and re-export with metrics (as experiments/idc-se2-shipped/ship_se2.sh does)"
exit $verdict
