"""Markdown tables of a `histoeq sweep --cv K` folder: the CV score per recipe and fold-paired differences.

    python scripts/cv_tables.py SWEEP_DIR

Per (model, augment): mean ± sd over folds of the best-epoch validation AUC (the K-fold CV score: validation
patients differ per fold, each train/val patient is validated on once) and of the test AUC of the same K models.
Then, per model, every pair of augmentations compared fold by fold (same validation patients), with the number
of folds where the first is ahead, on validation and on test.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pandas as pd


def main(sweep: Path) -> None:
    cells = pd.read_csv(sweep / "summary.csv")
    cells = cells[cells["cv_fold"].notna()]
    print("| model | augment | folds | CV AUC (validation) | test AUC (same models) |")
    print("|---|---|---|---|---|")
    for (model, augment), part in cells.groupby(["model", "augment"], sort=True):
        print(f"| {model} | {augment} | {len(part)} | {part['val_auc'].mean():.4f} ± {part['val_auc'].std():.4f} | "
              f"{part['auc_identity'].mean():.4f} ± {part['auc_identity'].std():.4f} |")
    print()
    print("| model | A − B | per fold, validation | A ahead (val) | per fold, test | A ahead (test) |")
    print("|---|---|---|---|---|---|")
    for model, part in cells.groupby("model", sort=True):
        by_aug = {a: p.set_index("cv_fold") for a, p in part.groupby("augment")}
        for a, b in itertools.combinations(sorted(by_aug), 2):
            folds = sorted(set(by_aug[a].index) & set(by_aug[b].index))
            if not folds:
                continue
            dv = [by_aug[a].loc[f, "val_auc"] - by_aug[b].loc[f, "val_auc"] for f in folds]
            dt = [by_aug[a].loc[f, "auc_identity"] - by_aug[b].loc[f, "auc_identity"] for f in folds]
            print(f"| {model} | {a} − {b} | {', '.join(f'{d:+.3f}' for d in dv)} | {sum(d > 0 for d in dv)}/"
                  f"{len(folds)} | {', '.join(f'{d:+.3f}' for d in dt)} | {sum(d > 0 for d in dt)}/{len(folds)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
