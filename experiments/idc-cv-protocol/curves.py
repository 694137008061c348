"""Mean held-out-fold AUC per epoch over the fold models of CV arms: is the fixed budget enough for each recipe?

    python experiments/idc-cv-protocol/curves.py RESULTS ARM...

Reads RESULTS/ARM/runs/*/metrics.jsonl (pooled AUC of the fold's held-out patients after each epoch; with a
weight average it is the average that is scored) and prints one row per arm.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def curves(results: Path, arms: list[str]) -> dict[str, np.ndarray]:
    table = {}
    for arm in arms:
        folds = [[json.loads(line)["val_auc"] for line in path.read_text().splitlines()]
                 for path in sorted((results / arm / "runs").glob("*/metrics.jsonl"))]
        table[arm] = np.mean(np.array(folds, dtype=float), axis=0)
    return table


if __name__ == "__main__":
    for arm, values in curves(Path(sys.argv[1]), sys.argv[2:]).items():
        print(f"{arm:8s}", " ".join(f"{v:.4f}" for v in values))
