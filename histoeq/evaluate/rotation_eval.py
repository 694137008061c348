"""Rotation evaluation of any predictor: metrics per view, invariance errors, label changes.

The hook for other model formats is `evaluate_predictor(predict_fn, inputs_or_dataset, ...)`: `predict_fn` takes a
uint8 batch (B, H, W, 3) RGB numpy array (un-normalised, as stored in the dataset) and returns class probabilities
(B, C) or positive-class probabilities (B,). A PyTorch checkpoint (`histoeq.evaluate.predictors`) and an ONNX
model plug in the same way, so their numbers are directly comparable.

Definitions (scores are p(positive) for binary tasks, all class probabilities otherwise):

* per view (angle k * 360/N, optionally mirrored): AUC, accuracy, balanced accuracy, F1 (scikit-learn);
  invariance error |p(x) - p(view(x))|, mean and max over patches;
* `invariance.exact` / `invariance.interpolated`: the same pooled over the 90-degree-multiple views (pure pixel
  permutations; a D4-invariant model must give 0) and over the other angles (interpolated; never exactly 0);
* `spread.exact`: max over patches of (max - min) of the score over all exact views;
* `label_change_fraction`: share of patches whose predicted label is not the same in every view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from histoeq.errors import HistoeqError
from histoeq.evaluate.context import build_contexts, describe_context
from histoeq.evaluate.metrics import (
    METRIC_NAMES,
    classification_metrics,
    nan_summary,
    positive_score,
    predicted_labels,
)
from histoeq.evaluate.patients import mean_patient_auc, per_patient_auc, pooled_metric
from histoeq.evaluate.rotations import View, apply_view, make_views
from histoeq.nn.actions import D4, transform_array
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide.context import NO_CONTEXT, grid_step, smooth_by_group

PredictFn = Callable[[np.ndarray], np.ndarray]
TTA_CHOICES = ("none", "d4")


@dataclass
class EvalInputs:
    """Everything that does not depend on the model: patches, labels, views and their context squares."""

    images: torch.Tensor  # uint8 (N, H, W, 3)
    labels: np.ndarray
    views: list[View]
    split: str
    tile_px: int
    contexts: torch.Tensor | None = None
    context_counts: dict[str, int] = field(default_factory=lambda: {"slide": 0, "reflect": 0})
    dataset: str = ""
    patients: np.ndarray | None = None  # patient of each patch: per-patient metrics and stain normalisation
    ids: np.ndarray | None = None  # dataset ids of the patches (predictions.csv)
    positions: np.ndarray | None = None  # (N, 2) x, y of each patch on its slide, when the index has them
    slides: np.ndarray | None = None  # the slide (else patient) each position refers to

    @property
    def context(self) -> str:
        if self.contexts is None:
            return "not needed (all views are exact 90-degree multiples / mirrors)"
        return describe_context(self.context_counts)


def prepare_inputs(dataset: Any, split: str = "test", rotations: int = 8, flips: bool = False,
                   slides: Path | None = None, limit: int | None = None,
                   progress: ProgressFn = null_progress) -> EvalInputs:
    """Load a split of a `PatchDataset` and, when some views are not 90-degree multiples, their context squares."""
    if rotations < 1:
        raise HistoeqError(f"--rotations must be at least 1, got {rotations}")
    ids = dataset.split_ids(split)
    if limit is not None:
        ids = ids[:limit]
    images = torch.from_numpy(np.ascontiguousarray(dataset.images[ids]))
    views = make_views(rotations, flips)
    rows = dataset.index.iloc[ids] if (dataset.index["id"].to_numpy() == np.arange(len(dataset))).all() \
        else dataset.index.set_index("id").loc[ids].reset_index()
    inputs = EvalInputs(images=images, labels=dataset.labels[ids], views=views, split=split,
                        tile_px=dataset.tile_px, dataset=str(dataset.path),
                        patients=rows["patient"].astype(str).to_numpy(), ids=np.asarray(ids))
    if {"x", "y"} <= set(rows.columns) and rows[["x", "y"]].notna().all().all():
        inputs.positions = rows[["x", "y"]].to_numpy(dtype=np.float64)
        slide = rows["slide"].fillna("").astype(str) if "slide" in rows else None
        inputs.slides = np.where(slide.to_numpy() != "", slide.to_numpy(), inputs.patients) \
            if slide is not None else inputs.patients
    if not all(v.exact for v in views):
        inputs.contexts, inputs.context_counts = build_contexts(images, rows, dataset.meta, Path(dataset.path),
                                                                slides, progress)
    return inputs


def d4_tta(predict_fn: PredictFn) -> PredictFn:
    """Test-time augmentation: the mean prediction over the 8 exact dihedral transforms of each patch.

    The numpy twin of `histoeq.models.view_average` (which averages inside a torch model): this one wraps any
    uint8-batch predictor, an ONNX file's included."""

    def predict(batch: np.ndarray) -> np.ndarray:
        outs = [np.asarray(predict_fn(np.ascontiguousarray(transform_array(batch, D4, g))), dtype=np.float64)
                for g in range(D4.order)]
        return np.mean(outs, axis=0)

    return predict


def _predict_view(predict_fn: PredictFn, inputs: EvalInputs, view: View, batch_size: int) -> np.ndarray:
    chunks = []
    for start in range(0, len(inputs.labels), batch_size):
        tiles = inputs.images[start:start + batch_size]
        context = None if inputs.contexts is None else inputs.contexts[start:start + batch_size]
        chunks.append(np.asarray(predict_fn(apply_view(tiles, view, context).numpy()), dtype=np.float64))
    return np.concatenate(chunks)


def with_context(inputs: EvalInputs, probs: np.ndarray, kernel: str) -> np.ndarray:
    """Binary class probabilities after averaging each patch's positive-class probability with its neighbours' on
    its slide's tile grid (`histoeq.slide.context`); the patches themselves are rotated one by one, so the grid
    does not move with the view."""
    if kernel == NO_CONTEXT:
        return probs
    if inputs.positions is None or inputs.slides is None:
        raise HistoeqError(f"--context {kernel} needs tile positions: the dataset index has no x, y columns")
    if not (probs.ndim == 1 or probs.shape[1] == 2):
        raise HistoeqError(f"--context {kernel} is defined for two classes, the model has {probs.shape[1]}")
    x, y = inputs.positions[:, 0], inputs.positions[:, 1]
    step = grid_step(x, y, inputs.slides)
    smoothed = smooth_by_group(x, y, positive_score(probs), inputs.slides, step, kernel)
    return smoothed if probs.ndim == 1 else np.stack([1.0 - smoothed, smoothed], axis=1)


class NonFiniteOutput(ValueError):
    """The model's probabilities hold NaN or inf; the caller, who knows which model it is, reports it."""


def evaluate_predictor(predict_fn: PredictFn, inputs: Any, *, tta: str | None = None, batch_size: int = 512,
                       progress: ProgressFn = null_progress, task: str = "eval", keep_probabilities: bool = False,
                       context: str = NO_CONTEXT, threshold: float = 0.5, **prepare_kw: Any) -> dict[str, Any]:
    """Score `predict_fn` on every view of `inputs` (an `EvalInputs`, or a `PatchDataset` plus `prepare_inputs`
    keyword arguments: split, rotations, flips, slides). Returns a JSON-able dict (see module docstring), plus the
    unrotated view's class probabilities under "probabilities" (a numpy array) with `keep_probabilities`, and with
    a context its combined probabilities under "context_probabilities".

    With a ``context`` kernel every view's probabilities are first combined with their grid neighbours'
    (`with_context`); the unrotated view's patch-only metrics are kept beside them under "patch_only". Binary
    labels (accuracy, balanced accuracy, F1, label changes) are p(class 1) at or above `threshold`."""
    if batch_size < 1:
        raise HistoeqError(f"--batch-size must be at least 1, got {batch_size}")
    if not isinstance(inputs, EvalInputs):
        inputs = prepare_inputs(inputs, progress=progress, **prepare_kw)
    tta = tta or "none"
    if tta not in TTA_CHOICES:
        raise HistoeqError(f"unknown --tta {tta!r} (choose from {', '.join(TTA_CHOICES)})")
    if tta == "d4":
        predict_fn = d4_tta(predict_fn)
    scores, labels_per_view, rows = [], [], []
    reference: np.ndarray | None = None
    identity_probs: np.ndarray | None = None
    patch_only: np.ndarray | None = None
    for i, view in enumerate(inputs.views):
        probs = _predict_view(predict_fn, inputs, view, batch_size)
        bad = int((~np.isfinite(probs.reshape(len(probs), -1))).any(axis=1).sum())  # (n, classes) or (n,)
        if bad:
            raise NonFiniteOutput(f"produced non-finite probabilities (NaN or inf) for {bad} of {len(probs)} "
                                  f"patches at view {view.name}: broken weights or a diverged training run")
        if patch_only is None:
            patch_only = probs
        probs = with_context(inputs, probs, context)
        score = positive_score(probs)
        if reference is None:
            reference, identity_probs = score, probs
        diff = np.abs(score - reference).reshape(len(score), -1).max(axis=1)
        rows.append({"angle": view.angle, "mirrored": view.mirrored, "exact": view.exact, "view": view.name,
                     **classification_metrics(inputs.labels, probs, threshold),
                     "invariance_mean": float(diff.mean()), "invariance_max": float(diff.max())})
        scores.append(score)
        labels_per_view.append(predicted_labels(probs, threshold))
        progress(task, i + 1, len(inputs.views), f"view {view.name}: AUC {rows[-1]['auc']:.4f}")
    result = _summarise(inputs, rows, scores, labels_per_view, tta)
    result["threshold"] = threshold
    result["per_patient"] = per_patient_metrics(inputs, identity_probs, threshold)
    result["patient_level"] = patient_level(inputs, identity_probs, threshold)
    result["spatial_context"] = context
    if context != NO_CONTEXT and patch_only is not None:
        result["patch_only"] = {**classification_metrics(inputs.labels, patch_only, threshold),
                                "patient_level": patient_level(inputs, patch_only, threshold)}
    if keep_probabilities:  # the model's own output, and the combined one when there is a context
        result["probabilities"] = patch_only
        if context != NO_CONTEXT:
            result["context_probabilities"] = identity_probs
    return result


def per_patient_metrics(inputs: EvalInputs, probs: np.ndarray | None, threshold: float = 0.5) -> list[dict[str, Any]]:
    """Metrics of the unrotated view for each patient: a pooled figure can hide one patient on whom the fixed
    threshold falls badly, which is how a model fails on the next patient's slide."""
    if inputs.patients is None or probs is None:
        return []
    binary = probs.ndim == 1 or probs.shape[1] == 2
    rows = []
    for patient in dict.fromkeys(inputs.patients.tolist()):
        sel = inputs.patients == patient
        labels = inputs.labels[sel]
        rows.append({"patient": str(patient), "n": int(sel.sum()),
                     "positives": int((labels == 1).sum()) if binary else None,
                     "mean_score": float(positive_score(probs[sel]).mean()) if binary else None,
                     **classification_metrics(labels, probs[sel], threshold)})
    return rows


def patient_level(inputs: EvalInputs, probs: np.ndarray | None, threshold: float = 0.5,
                  n_boot: int = 2_000) -> dict[str, Any] | None:
    """Mean per-patient AUC, and pooled AUC, balanced accuracy and F1 (at `threshold`), of the unrotated view
    with patient-bootstrap 95 % intervals (binary tasks with at least two patients): on a few patients these
    intervals, not the seed spread, say how much a figure can be trusted (docs/protocol.md)."""
    if inputs.patients is None or probs is None or not (probs.ndim == 1 or probs.shape[1] == 2):
        return None
    if len(np.unique(inputs.patients)) < 2 or len(np.unique(inputs.labels)) < 2:
        return None
    score = positive_score(probs)
    table = per_patient_auc(inputs.labels, score, inputs.patients)
    mean = mean_patient_auc(table, n_boot=n_boot)
    pooled = {f"pooled_{metric}": pooled_metric(inputs.labels, score, inputs.patients, metric, threshold,
                                                n_boot=n_boot)
              for metric in ("auc", "balanced_accuracy", "f1")}
    return {"patients": int(table["auc"].notna().sum()),
            "excluded_one_class": table.loc[table["auc"].isna(), "patient"].tolist(),
            "mean_patient_auc": {"value": mean.value, "ci95": [mean.low, mean.high]},
            **{name: {"value": e.value, "ci95": [e.low, e.high]} for name, e in pooled.items()},
            "threshold": threshold,
            "bootstrap": f"{n_boot} patient resamples, seed 0, percentile interval"}


def _pooled(rows: list[dict[str, Any]], scores: list[np.ndarray], exact: bool) -> dict[str, float | None]:
    picked = [i for i, r in enumerate(rows) if r["exact"] == exact and i > 0]
    if not picked:
        return {"mean": None, "max": None, "views": 0}
    diffs = np.stack([np.abs(scores[i] - scores[0]).reshape(len(scores[0]), -1).max(axis=1) for i in picked])
    return {"mean": float(diffs.mean()), "max": float(diffs.max()), "views": len(picked)}


def _summarise(inputs: EvalInputs, rows: list[dict[str, Any]], scores: list[np.ndarray],
               labels_per_view: list[np.ndarray], tta: str) -> dict[str, Any]:
    exact_idx = [i for i, r in enumerate(rows) if r["exact"]]
    stacked = np.stack([s.reshape(len(s), -1) for s in scores])  # (views, N, C')
    exact_spread = stacked[exact_idx].max(axis=0) - stacked[exact_idx].min(axis=0)
    labels = np.stack(labels_per_view)
    changed = (labels != labels[0]).any(axis=0)
    changed_exact = (labels[exact_idx] != labels[0]).any(axis=0)
    summary = {}
    for name in METRIC_NAMES:
        values = np.array([r[name] for r in rows], dtype=np.float64)
        summary[name] = {"identity": float(values[0]), **nan_summary(values)}
    return {
        "n": int(len(inputs.labels)), "split": inputs.split, "tta": tta, "context": inputs.context,
        "context_counts": inputs.context_counts if inputs.contexts is not None else None,
        "views": rows,
        "invariance": {"exact": _pooled(rows, scores, True), "interpolated": _pooled(rows, scores, False)},
        "spread": {"exact": float(exact_spread.max()), "exact_views": len(exact_idx)},
        "label_change_fraction": float(changed.mean()),
        "label_change_fraction_exact": float(changed_exact.mean()),
        "summary": summary,
    }
