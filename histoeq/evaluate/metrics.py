"""Classification metrics from predicted probabilities, all from scikit-learn.

Shared by validation during training and by rotation evaluation so that "AUC" means the same number everywhere.
Binary tasks score the positive class (index 1) and threshold its probability (at 0.5 unless a model's chosen
operating point says otherwise); multi-class tasks use one-vs-rest macro AUC and the arg-max label.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

METRIC_NAMES = ("auc", "accuracy", "balanced_accuracy", "f1")


def positive_score(probs: np.ndarray) -> np.ndarray:
    """The score AUC and invariance errors are computed on: p(class 1) for binary, else the full matrix."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        return probs
    return probs[:, 1] if probs.shape[1] == 2 else probs


def predicted_labels(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary: 1 where p(class 1) is at or above `threshold`; multi-class: the arg-max class."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1 or probs.shape[1] == 2:
        return (positive_score(probs) >= threshold).astype(np.int64)
    return probs.argmax(axis=1)


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, accuracy, balanced accuracy and F1 (binary: of the positive class at `threshold`; multi-class: macro).

    AUC is NaN when only one class is present in `labels` (a tiny subset, a one-class split), instead of raising;
    multi-class AUC is NaN when any class is absent. scikit-learn's warnings about such subsets (undefined AUC,
    predicted classes absent from `labels`) are silenced: the NaN records the fact, and a warning per view and epoch
    would only flood the terminal.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    pred = predicted_labels(probs, threshold)
    binary = probs.ndim == 1 or probs.shape[1] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        if np.unique(labels).size < 2:
            auc = float("nan")
        elif binary:
            auc = float(roc_auc_score(labels, positive_score(probs)))
        else:
            auc = float(roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(probs.shape[1]))))
        return {
            "auc": auc,
            "accuracy": float(accuracy_score(labels, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
            "f1": float(f1_score(labels, pred, average="binary" if binary else "macro", zero_division=0)),
        }


def nan_summary(values: np.ndarray) -> dict[str, float]:
    """Mean, min, max and sd of `values`, ignoring NaN; all NaN (a metric undefined in every
    view, e.g. AUC on a one-class split) gives NaN for each, without numpy's all-NaN warnings."""
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).all():
        return {"mean": float("nan"), "min": float("nan"), "max": float("nan"), "sd": float("nan")}
    return {"mean": float(np.nanmean(values)), "min": float(np.nanmin(values)), "max": float(np.nanmax(values)),
            "sd": float(np.nanstd(values))}
