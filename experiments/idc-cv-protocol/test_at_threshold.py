"""The 4 test patients as scored by one model, at the operating point chosen on OOF (reported, deciding nothing).

    python experiments/idc-cv-protocol/test_at_threshold.py PREDICTIONS_CSV THRESHOLD [OUT_CSV]

PREDICTIONS_CSV is `histoeq eval --context KERNEL`'s predictions.csv (prob_<class> patch-only, and
prob_<class>_<kernel> with context). For each probability column: mean per-patient AUC, pooled AUC, balanced
accuracy and F1 at THRESHOLD, each with a patient-bootstrap 95 % interval over the test patients, and the
per-patient table (n, positives, AUC, sensitivity and specificity at THRESHOLD).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from histoeq.evaluate.patients import mean_patient_auc, per_patient_auc, pooled_metric


def summarise(frame: pd.DataFrame, column: str, threshold: float) -> tuple[dict, pd.DataFrame]:
    labels, scores, patients = frame["label"].to_numpy(), frame[column].to_numpy(), frame["patient"].to_numpy()
    per_patient = per_patient_auc(labels, scores, patients)
    called = scores >= threshold
    rates = frame.assign(called=called).groupby(frame["patient"].astype(str))
    per_patient["sensitivity"] = per_patient["patient"].map(
        rates.apply(lambda p: p.loc[p["label"] == 1, "called"].mean() if (p["label"] == 1).any() else np.nan))
    per_patient["specificity"] = per_patient["patient"].map(
        rates.apply(lambda p: 1 - p.loc[p["label"] == 0, "called"].mean() if (p["label"] == 0).any() else np.nan))
    summary = {"probabilities": column, "threshold": threshold, "n": len(frame),
               "mean_patient_auc": mean_patient_auc(per_patient).text()}
    for metric in ("auc", "balanced_accuracy", "f1"):
        summary[f"pooled_{metric}"] = pooled_metric(labels, scores, patients, metric, threshold, n_boot=10_000).text()
    return summary, per_patient.assign(probabilities=column)


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table (pandas' to_markdown needs tabulate, which the project does not install)."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main(predictions: Path, threshold: float, out: Path | None = None) -> None:
    frame = pd.read_csv(predictions)
    positive = [c for c in frame.columns if c.startswith("prob_")][1]  # binary: prob_<negative>, prob_<positive>
    columns = [c for c in frame.columns if c == positive or c.startswith(f"{positive}_")]
    rows, tables = [], []
    for column in columns:
        summary, table = summarise(frame, column, threshold)
        rows.append(summary)
        tables.append(table)
    print(markdown(pd.DataFrame(rows)))
    print()
    per_patient = pd.concat(tables, ignore_index=True)
    print(markdown(per_patient))
    if out is not None:
        per_patient.to_csv(out, index=False, float_format="%.4f")


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
