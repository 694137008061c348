r"""Markdown tables for README "E": a 5-fold CV with and without per-patient stain normalisation.

Usage: python scripts/stain_tables.py [--model M] BASELINE_SWEEP NAME=SWEEP [NAME=SWEEP ...]
e.g.   python scripts/stain_tables.py .work/cv-w8 reinhard-lab=.work/cv-w8-reinhard macenko=.work/cv-w8-macenko
       python scripts/stain_tables.py --model se2 .work/gpu7/cv/se2-none-idc-w8 \
           macenko=.work/gpu7/cv/se2-none-idc-macenko-w8

Reads each sweep's summary.csv (M / none rows, cnn by default; seed s validated on fold s mod 5), pairing the runs
by seed. Validation figures are the best epoch by validation AUC (what the pre-registered rules compare); test
figures are the same models on the test patients, whose patches each sweep normalised with its own method.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def _val_best(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max(rows, key=lambda r: r["val_auc"])


def load(sweep: Path, model: str) -> pd.DataFrame:
    summary = pd.read_csv(sweep / "summary.csv")
    summary = summary[(summary["model"] == model) & (summary["augment"] == "none")].sort_values("seed")
    vals = [_val_best(sweep / "runs" / f"{model}_none_f1_s{seed}") for seed in summary["seed"]]
    return pd.DataFrame({
        "seed": summary["seed"].to_numpy(),
        "val_auc": [v["val_auc"] for v in vals],
        "val_bacc": [v["val_balanced_accuracy"] for v in vals],
        "test_auc": summary["auc_identity"].to_numpy(),
        "test_bacc": summary["balanced_accuracy_identity"].to_numpy(),
        "test_f1": summary["f1_identity"].to_numpy(),
    })


def main(argv: list[str]) -> None:
    model = "cnn"
    if argv[0] == "--model":
        model, argv = argv[1], argv[2:]
    base = load(Path(argv[0]), model)
    variants = [("none", base)] + [(name, load(Path(path), model))
                                   for name, path in (a.split("=", 1) for a in argv[1:])]
    print("| normalisation | fold models | val AUC | val balanced acc. | test AUC | test balanced acc. | test F1 |")
    print("|---|---|---|---|---|---|---|")
    for name, df in variants:
        cells = [f"{df[c].mean():.3f} ± {df[c].std(ddof=1):.3f}" for c in
                 ("val_auc", "val_bacc", "test_auc", "test_bacc", "test_f1")]
        print(f"| {name} | {len(df)} | " + " | ".join(cells) + " |")
    print()
    print("| normalisation | Δ val balanced acc. per seed (fold = seed mod 5) | better | Δ val AUC per fold "
          "| Δ test AUC per fold |")
    print("|---|---|---|---|---|")
    for name, df in variants[1:]:
        merged = base.merge(df, on="seed", suffixes=("_0", ""))
        d_bacc = merged["val_bacc"] - merged["val_bacc_0"]
        d_auc = merged["val_auc"] - merged["val_auc_0"]
        d_test = merged["test_auc"] - merged["test_auc_0"]
        fmt = lambda s: ", ".join(f"{v:+.3f}" for v in s)  # noqa: E731
        print(f"| {name} | {fmt(d_bacc)} (mean {d_bacc.mean():+.3f}) | {(d_bacc > 0).sum()}/{len(d_bacc)} | "
              f"{fmt(d_auc)} (mean {d_auc.mean():+.3f}) | {fmt(d_test)} (mean {d_test.mean():+.3f}) |")


if __name__ == "__main__":
    main(sys.argv[1:])
