"""ROC, precision-recall and reliability (calibration) figures of the unrotated view, one curve per run.

Binary tasks score the positive class (index 1), as `metrics` does; a multi-class task is drawn one-vs-rest for its
last class (the class `histoeq predict` maps). Curves come from scikit-learn, so the AUC and average precision in
the legends are the numbers eval reports elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from histoeq.evaluate.plots import plt

CALIBRATION_BINS = 10


@dataclass(frozen=True)
class ScoredRun:
    """One run's scores of the positive class and the binary truth (1 = positive)."""

    label: str
    truth: np.ndarray
    score: np.ndarray


def scored_run(label: str, labels: np.ndarray, probs: np.ndarray) -> ScoredRun:
    """`probs` (n,) of the positive class or (n, classes); `labels` class indices."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim == 1 or probs.shape[1] == 1:
        return ScoredRun(label, (labels == 1).astype(np.int64), probs.reshape(-1))
    positive = 1 if probs.shape[1] == 2 else probs.shape[1] - 1
    return ScoredRun(label, (labels == positive).astype(np.int64), probs[:, positive])


def _usable(runs: Sequence[ScoredRun]) -> list[ScoredRun]:
    """Runs whose truth has both classes (a curve of one class is undefined)."""
    return [r for r in runs if r.truth.size and 0 < r.truth.sum() < r.truth.size]


def _empty_note(ax: Any) -> None:
    ax.text(0.5, 0.5, "undefined: the labels hold one class only", ha="center", va="center", fontsize=8,
            transform=ax.transAxes)


def roc_figure(runs: Sequence[ScoredRun], positive: str, title: str = "") -> Any:
    """ROC curves with the chance diagonal; AUC in the legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="chance (AUC 0.5)")
    usable = _usable(runs)
    for r in usable:
        fpr, tpr, _ = roc_curve(r.truth, r.score)
        ax.plot(fpr, tpr, lw=1.5, label=f"{r.label}: AUC {roc_auc_score(r.truth, r.score):.3f}")
    if not usable:
        _empty_note(ax)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate (1 − specificity)",
           ylabel="true positive rate (sensitivity)", title=title or f"ROC, {positive} vs rest")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def pr_figure(runs: Sequence[ScoredRun], positive: str, title: str = "") -> Any:
    """Precision-recall curves with the prevalence line (a classifier without skill); average precision in the
    legend."""
    fig, ax = plt.subplots(figsize=(5, 5))
    usable = _usable(runs)
    for r in usable:
        precision, recall, _ = precision_recall_curve(r.truth, r.score)
        ax.plot(recall, precision, lw=1.5, drawstyle="steps-post",
                label=f"{r.label}: AP {average_precision_score(r.truth, r.score):.3f}")
    if usable:
        prevalence = float(usable[0].truth.mean())
        ax.axhline(prevalence, ls=":", color="grey", lw=1, label=f"prevalence {prevalence:.3f}")
    else:
        _empty_note(ax)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision",
           title=title or f"precision-recall, {positive}")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    if usable:
        ax.legend(fontsize=7, loc="lower left")
    return fig


def calibration_figure(runs: Sequence[ScoredRun], positive: str, title: str = "",
                       bins: int = CALIBRATION_BINS) -> Any:
    """Reliability diagram: observed positive share against mean predicted p in `bins` equal-width bins (bins
    without patches are left out), the diagonal of perfect calibration, and below it how many patches fall in each
    bin (a point from a few patches says little)."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, bins + 1)
    usable = _usable(runs)
    for r in usable:
        observed, predicted = calibration_curve(r.truth, np.clip(r.score, 0.0, 1.0), n_bins=bins,
                                                strategy="uniform")
        brier = float(np.mean((r.score - r.truth) ** 2))
        line, = ax.plot(predicted, observed, marker="o", ms=4, lw=1.5, label=f"{r.label}: Brier {brier:.3f}")
        hist.hist(np.clip(r.score, 0.0, 1.0), bins=edges, histtype="step", color=line.get_color(), lw=1.5)
    if not usable:
        _empty_note(ax)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel=f"observed share of {positive}",
           title=title or f"calibration, p({positive})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    hist.set(xlabel=f"predicted p({positive})", ylabel="patches")
    hist.set_yscale("log")
    hist.grid(alpha=0.3)
    fig.tight_layout()
    return fig
