"""Patient-level statistics: per-patient AUC, patient-bootstrap intervals, paired differences and Holm's rule.

Why: on histopathology patches the unit of replication is the patient, not the patch (neighbouring patches of one
patient share tissue, stain and scanner), and per-patient prevalence varies widely, so pooled AUC mixes ranking
within patients with shifts between them. Endpoints and their intervals here resample patients (docs/protocol.md):
10,000 bootstrap replicates with a fixed seed, percentile intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

N_BOOT = 10_000
THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its patient-bootstrap 95 % interval (and, for differences, a two-sided p-value)."""

    value: float
    low: float
    high: float
    p: float = float("nan")

    def text(self, digits: int = 4) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def per_patient_auc(labels: np.ndarray, scores: np.ndarray, patients: np.ndarray) -> pd.DataFrame:
    """patient, n, positives, auc (NaN for a patient whose patches hold one class only)."""
    frame = pd.DataFrame({"patient": np.asarray(patients).astype(str), "label": np.asarray(labels),
                          "score": np.asarray(scores, dtype=np.float64)})
    rows = []
    for patient, part in frame.groupby("patient", sort=True):
        both = part["label"].nunique() == 2
        rows.append({"patient": patient, "n": len(part), "positives": int(part["label"].sum()),
                     "auc": float(roc_auc_score(part["label"], part["score"])) if both else float("nan")})
    return pd.DataFrame(rows)


def _bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(value: float, replicates: np.ndarray, null: bool = False) -> Estimate:
    reps = replicates[np.isfinite(replicates)]
    if reps.size == 0:
        return Estimate(value, float("nan"), float("nan"))
    low, high = np.percentile(reps, [2.5, 97.5])
    p = float(min(1.0, 2.0 * min(np.mean(reps <= 0), np.mean(reps >= 0)))) if null else float("nan")
    return Estimate(float(value), float(low), float(high), p)


def mean_patient_auc(table: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean per-patient AUC over patients with both classes, with the patient-bootstrap interval."""
    aucs = table["auc"].dropna().to_numpy()
    if aucs.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    idx = _bootstrap_indices(aucs.size, n_boot, seed)
    return _interval(float(aucs.mean()), aucs[idx].mean(axis=1))


def pooled_metric(labels: np.ndarray, scores: np.ndarray, patients: np.ndarray, metric: str,
                  threshold: float = 0.5, n_boot: int = 2_000, seed: int = 0) -> Estimate:
    """Pooled AUC, balanced accuracy or F1 (at `threshold`) with an interval from resampling whole patients."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    patients = np.asarray(patients).astype(str)
    names, inverse = np.unique(patients, return_inverse=True)
    picks = _bootstrap_indices(len(names), n_boot, seed)
    if metric in ("balanced_accuracy", "f1"):
        return _pooled_rate(labels, scores >= threshold, inverse, picks, metric)
    if metric != "auc":
        raise ValueError(f"unknown metric {metric!r}")

    def auc(sel_labels: np.ndarray, sel_scores: np.ndarray) -> float:
        return float(roc_auc_score(sel_labels, sel_scores)) if np.unique(sel_labels).size == 2 else np.nan

    members = [np.flatnonzero(inverse == k) for k in range(len(names))]
    reps = np.empty(n_boot)
    for b, pick in enumerate(picks):
        rows = np.concatenate([members[k] for k in pick])
        reps[b] = auc(labels[rows], scores[rows])
    return _interval(auc(labels, scores), reps)


def _pooled_rate(labels: np.ndarray, called: np.ndarray, inverse: np.ndarray, picks: np.ndarray,
                 metric: str) -> Estimate:
    """Balanced accuracy or F1 of pooled patches for every resample of patients.

    Both depend on the patches only through the confusion counts, and a resample's counts are the sum of its
    patients' counts, so each replicate is a weighted sum of a per-patient table: the same figures as scoring
    the concatenated patches with scikit-learn (balanced accuracy undefined without both classes, F1 0 when
    nothing is positive), without rebuilding 10,000 arrays."""
    n_patients = int(inverse.max()) + 1 if inverse.size else 0
    positive, called = np.asarray(labels) == 1, np.asarray(called, dtype=bool)
    counts = np.stack([np.bincount(inverse, weights=(positive & called).astype(float), minlength=n_patients),
                       np.bincount(inverse, weights=(~positive & called).astype(float), minlength=n_patients),
                       np.bincount(inverse, weights=(positive & ~called).astype(float), minlength=n_patients),
                       np.bincount(inverse, weights=(~positive & ~called).astype(float), minlength=n_patients)],
                      axis=1)  # per patient: tp, fp, fn, tn
    n_boot = len(picks)
    times = np.bincount((np.arange(n_boot)[:, None] * n_patients + picks).ravel(),
                        minlength=n_boot * n_patients).reshape(n_boot, n_patients)
    totals = np.vstack([counts.sum(axis=0), times @ counts])  # row 0: the sample itself

    tp, fp, fn, tn = totals.T
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "balanced_accuracy":
            values = np.where((tp + fn > 0) & (tn + fp > 0), (tp / (tp + fn) + tn / (tn + fp)) / 2, np.nan)
        else:
            values = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return _interval(float(values[0]), values[1:])


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold on the 0.01..0.99 grid that maximises pooled balanced accuracy (the first of ties)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    values = [balanced_accuracy_score(labels, (scores >= t).astype(int)) for t in THRESHOLD_GRID]
    return float(THRESHOLD_GRID[int(np.argmax(values))])


def paired_auc_difference(a: pd.DataFrame, b: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean of (b − a) per-patient AUC over the patients both tables score, with interval and bootstrap p-value."""
    both = a.dropna(subset=["auc"]).merge(b.dropna(subset=["auc"]), on="patient", suffixes=("_a", "_b"))
    diff = (both["auc_b"] - both["auc_a"]).to_numpy()
    if diff.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    idx = _bootstrap_indices(diff.size, n_boot, seed)
    return _interval(float(diff.mean()), diff[idx].mean(axis=1), null=True)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
