"""The 4 test patients as scored by each fold model of CV arms (reported, deciding nothing; docs/protocol.md).

    python experiments/idc-cv-protocol/test_by_fold.py RESULTS ARM...

Reads RESULTS/ARM/runs/*/cell.json (written by `histoeq sweep`, kept by keep_folds.sh) and writes
RESULTS/test_by_fold.csv: per arm and fold, the test split's mean per-patient AUC and pooled AUC with their
patient-bootstrap 95 % intervals, balanced accuracy and F1 at 0.5, and the share of labels that change over the 8
D4 views; then one line per arm with the mean over its folds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

COLUMNS = ["mean_patient_auc", "mean_patient_auc_ci95_low", "mean_patient_auc_ci95_high", "pooled_auc",
           "pooled_auc_ci95_low", "pooled_auc_ci95_high", "balanced_accuracy_identity", "f1_identity",
           "label_change_d4"]


def main(results: Path, arms: list[str]) -> pd.DataFrame:
    rows = []
    for arm in arms:
        for cell_path in sorted((results / arm / "runs").glob("*/cell.json")):
            cell = json.loads(cell_path.read_text())
            rows.append({"arm": arm, "fold": cell["cv_fold"], **{c: cell.get(c) for c in COLUMNS}})
    table = pd.DataFrame(rows)
    means = table.groupby("arm", sort=False)[COLUMNS].mean().reset_index().assign(fold="mean")
    table = pd.concat([table, means], ignore_index=True)
    table.to_csv(results / "test_by_fold.csv", index=False, float_format="%.4f")
    return table


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2:]).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
