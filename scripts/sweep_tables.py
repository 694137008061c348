"""Markdown tables for the README from a finished sweep folder (summary_groups.csv, claims.csv, angle_spread.csv).

    python scripts/sweep_tables.py SWEEP_DIR > tables.md

Formatting only: every number comes from the files `histoeq sweep` wrote.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

METRICS = [("auc_mean_angles", "test AUC"), ("balanced_accuracy_mean_angles", "balanced acc."),
           ("f1_mean_angles", "F1")]


def _mean_sd(row: pd.Series, metric: str) -> str:
    sd = row[f"{metric}_sd"]
    return f"{row[f'{metric}_mean']:.3f}" + ("" if pd.isna(sd) else f" ± {sd:.3f}")


def _ci(row: pd.Series, metric: str) -> str:
    low, high = row[f"{metric}_ci95_low"], row[f"{metric}_ci95_high"]
    return "n/a" if pd.isna(low) else f"[{low:.3f}, {high:.3f}]"


def groups_table(groups: pd.DataFrame, spread: pd.DataFrame) -> str:
    spread = spread.set_index(["model", "augment", "fraction"])
    head = ["model", "augment", "fraction", "seeds", "test AUC (mean of 8 angles)", "AUC 95% CI", "balanced acc.",
            "F1", "AUC range over 8 angles", "max \\|Δp\\| at 90° multiples", "label changes over 8 angles"]
    d4 = "label_change_d4" in spread
    head += ["label changes over the 8 D4 transforms"] if d4 else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in groups.sort_values(["model", "augment", "fraction"]).iterrows():
        s = spread.loc[(row["model"], row["augment"], row["fraction"])]
        cells = [row["model"], row["augment"], f"{row['fraction']:g}", str(int(row["seeds"])),
                 _mean_sd(row, "auc_mean_angles"), _ci(row, "auc_mean_angles"),
                 _mean_sd(row, "balanced_accuracy_mean_angles"), _mean_sd(row, "f1_mean_angles"),
                 f"{s['auc_range_angles']:.4f}", f"{s['spread_exact']:.1e}", f"{s['label_change_fraction']:.1%}"]
        if d4:
            cells.append("n/a" if pd.isna(s["label_change_d4"]) else f"{s['label_change_d4']:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_table(claims: pd.DataFrame, claim: str, fractions: list[float] | None = None) -> str:
    head = ["G-CNN (no augmentation)", "fraction", "versus"] + [name for _, name in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    part = claims[claims["claim"] == claim]
    if fractions is not None:
        part = part[part["fraction"].isin(fractions)]
    for (model, fraction, versus), rows in part.groupby(["model", "fraction", "versus"], sort=True):
        by_metric = rows.set_index("metric")
        cells = [model, f"{fraction:g}", versus]
        for metric, _ in METRICS:
            r = by_metric.loc[metric]
            interval = ("" if math.isnan(r["ci95_low"]) else f" [{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]")
            cells.append(f"{r['difference']:+.3f}{interval} {r['verdict']}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    args = parser.parse_args()
    groups = pd.read_csv(args.sweep / "summary_groups.csv")
    claims = pd.read_csv(args.sweep / "claims.csv")
    spread = pd.read_csv(args.sweep / "angle_spread.csv")
    print(groups_table(groups, spread), "", "C1 (same fraction, versus the CNN with D4 augmentation):", "",
          claims_table(claims, "C1"), "", "C2 (G-CNN on less data versus the CNN on all of it):", "",
          claims_table(claims, "C2"), sep="\n")


if __name__ == "__main__":
    main()
