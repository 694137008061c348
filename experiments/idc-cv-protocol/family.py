"""Holm over the whole family of docs/protocol.md (H1-H5), from the comparison files `histoeq cv-compare --out`
wrote for each hypothesis.

    python experiments/idc-cv-protocol/family.py RESULTS H=FOLDER:COMPARISON [H=FOLDER:COMPARISON ...]

Each argument names one hypothesis, the folder (under RESULTS) holding its ``comparisons.csv`` and the row that is
its test, e.g. ``H1=h1:"r1 − r0"``. cv-compare adjusts only over the arms given to one call; the protocol adjusts
over the whole family at once, which this does. Writes RESULTS/family.csv and prints it as a Markdown table. A
change is adopted when its mean paired difference is above 0 and its Holm-adjusted p is below 0.05 (for H5 the
change is "today's default recipe is kept").
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from histoeq.evaluate.patients import holm

LEVEL = 0.05


def family_table(results: Path, specs: list[str]) -> pd.DataFrame:
    rows = []
    for spec in specs:
        name, _, where = spec.partition("=")
        folder, _, comparison = where.partition(":")
        table = pd.read_csv(results / folder / "comparisons.csv")
        row = table.loc[table["comparison"] == comparison]
        if len(row) != 1:
            raise SystemExit(f"error: {results / folder / 'comparisons.csv'}: no single row {comparison!r}")
        rows.append({"hypothesis": name, **row.iloc[0].drop(["p_holm", "adopted"]).to_dict()})
    family = pd.DataFrame(rows)
    family["p_holm_family"] = holm(family["p"].tolist())
    family["adopted"] = (family["mean_delta_patient_auc"] > 0) & (family["p_holm_family"] < LEVEL)
    return family


def markdown(family: pd.DataFrame) -> str:
    lines = [f"| hypothesis | comparison | mean Δ per-patient AUC | 95 % interval | p | p (Holm, m = {len(family)}) "
             "| better patients | adopted |", "|---|---|---|---|---|---|---|---|"]
    for row in family.itertuples():
        lines.append(f"| {row.hypothesis} | {row.comparison} | {row.mean_delta_patient_auc:+.4f} | "
                     f"[{row.ci95_low:+.4f}, {row.ci95_high:+.4f}] | {row.p:.4f} | {row.p_holm_family:.4f} | "
                     f"{row.better_patients} | {'yes' if row.adopted else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    results = Path(argv[0])
    family = family_table(results, argv[1:])
    family.to_csv(results / "family.csv", index=False, float_format="%.6g")
    print(markdown(family))


if __name__ == "__main__":
    main(sys.argv[1:])
