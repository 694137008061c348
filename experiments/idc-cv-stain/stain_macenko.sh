#!/usr/bin/env bash
# The second pre-registered stain experiment (the first, experiments/idc-cv-stain/stain_normalise.sh, tried Reinhard).
#
# Why a second one: Reinhard matches each patient's L*a*b* mean and sd to a reference, and these statistics move with
# the patient's tumour burden (a mostly-IDC patient is darker on average), so it lightened IDC-rich patients and
# darkened IDC-free ones; on CV folds 1 and 2 validation AUC fell from 0.944/0.930 to 0.867/0.667. Macenko's stain
# vectors (the hues of haematoxylin and eosin) do not depend on how much of each the slide holds; its 99th
# percentile concentrations might. So two variants (histoeq/data/stain.py): `macenko` (vectors and intensities) and
# `macenko-vectors` (vectors only).
#
# The rule, written and committed before either variant was trained or evaluated:
#   Step 1, on validation patients only: for each variant, the 5-fold CV of the width-8 CNN (README "D": seeds 0-4,
#   3 epochs, batch 128, no augmentation) on the normalised patches, against the same folds of the un-normalised
#   runs (.work/cv-w8/runs/cnn_none_f1_s{0..4}), best epoch by validation AUC. A variant qualifies iff
#   mean delta balanced accuracy > 0, delta balanced accuracy > 0 in at least 3 of 5 folds, and mean delta
#   AUC >= -0.005 (the Reinhard rule, unchanged). If both qualify, the one with the larger mean delta balanced
#   accuracy is taken; if neither, stop here (exit 1).
#   Step 2: as in experiments/idc-cv-stain/stain_normalise.sh: se2 C8 width 8, seeds 3/4/5, the shipped recipe, on the chosen
#   variant's patches; the mirror-averaged mean replaces models/idc-se2.onnx iff its validation AUC >= 0.9343 and
#   balanced accuracy >= 0.8619 (the shipped model's 0.9393 / 0.8669 less 0.005). Threshold 0.5, nothing tuned;
#   test figures computed and reported either way.
#
# Usage: experiments/idc-cv-stain/stain_macenko.sh IDC_DATASET (repository root, venv active; resumes).
set -euo pipefail
data=${1:?dataset folder made by histoeq import}

for method in macenko macenko-vectors; do
  [[ -f ".work/idc-$method/meta.json" ]] || histoeq normalise "$data" --method "$method" --out ".work/idc-$method"
  histoeq sweep --models cnn --augment none --data ".work/idc-$method" --out ".work/cv-w8-$method" --fractions 1 \
    --seeds 5 --cv 5 --epochs 3 --patience 3 --width 8 --batch-size 128 --rotations 8 --device cpu
done

chosen=$(python - .work/cv-w8/runs .work/cv-w8-macenko/runs .work/cv-w8-macenko-vectors/runs <<'PY'
import json, sys
from pathlib import Path

def best(run):
    rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max(rows, key=lambda r: r["val_auc"])

baseline, qualified = sys.argv[1], {}
for runs, name in zip(sys.argv[2:], ("macenko", "macenko-vectors")):
    d_bacc, d_auc = [], []
    for seed in range(5):
        new, old = best(f"{runs}/cnn_none_f1_s{seed}"), best(f"{baseline}/cnn_none_f1_s{seed}")
        d_bacc.append(new["val_balanced_accuracy"] - old["val_balanced_accuracy"])
        d_auc.append(new["val_auc"] - old["val_auc"])
        print(f"{name} fold {seed}: val AUC {old['val_auc']:.4f} -> {new['val_auc']:.4f}, balanced accuracy "
              f"{old['val_balanced_accuracy']:.4f} -> {new['val_balanced_accuracy']:.4f}", file=sys.stderr)
    mean_b, mean_a, wins = sum(d_bacc) / 5, sum(d_auc) / 5, sum(d > 0 for d in d_bacc)
    ok = mean_b > 0 and wins >= 3 and mean_a >= -0.005
    print(f"{name}: mean delta balanced accuracy {mean_b:+.4f} (better in {wins}/5 folds), mean delta AUC "
          f"{mean_a:+.4f}: {'qualifies' if ok else 'does not qualify'}", file=sys.stderr)
    if ok:
        qualified[name] = mean_b
if not qualified:
    sys.exit(1)
print(max(qualified, key=qualified.get))
PY
)
echo "chosen: $chosen"

norm=".work/idc-$chosen"
work=".work/se2-$chosen"
mkdir -p "$work"
members=()
for seed in 3 4 5; do
  run="$work/se2-w8-s$seed"
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
histoeq eval "$work/candidate.onnx" --data "$data" --split test --rotations 8 --device cpu --out "$work/test"
python - "$work/val/eval.json" <<'PY'
import json, sys
view = next(v for v in json.load(open(sys.argv[1]))["runs"][0]["views"] if v["angle"] == 0 and not v["mirrored"])
ok = view["auc"] >= 0.9393 - 0.005 and view["balanced_accuracy"] >= 0.8669 - 0.005
print(f"candidate validation AUC {view['auc']:.4f} (rule >= 0.9343), balanced accuracy "
      f"{view['balanced_accuracy']:.4f} (rule >= 0.8619): {'SHIP' if ok else 'do not ship'}")
sys.exit(0 if ok else 1)
PY
echo "rule passed: copy the members to models/ and re-export with metrics (as experiments/idc-se2-shipped/ship_se2.sh does)"
