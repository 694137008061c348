"""Patient-level cross-validation folds over the train and validation patients (the test split is never touched).

Why: a fixed validation split of a few patients cannot rank models whose differences are patient effects (on IDC,
three seeds with validation AUCs within 0.003 spanned 0.897-0.931 on the test patients). K folds give every
train/val patient a turn in validation, so a recipe is judged on all of them; the mean over folds is the
selection score, and the test split stays untouched for the final report.

Folds come from scikit-learn's `StratifiedGroupKFold` (groups = patients, so no patient is on both sides;
stratified by label, so each fold has about the pool's class balance). Its greedy assignment, without
shuffling, is deterministic: every recipe of a comparison is scored on the same folds, on any machine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from histoeq.errors import HistoeqError

POOL_SPLITS = ("train", "val")


def parse_fold(spec: str) -> tuple[int, int]:
    """``"i/k"`` (0 <= i < k, k >= 2) -> (i, k); anything else is a `HistoeqError` saying what is expected."""
    try:
        i, k = (int(v) for v in str(spec).split("/"))
    except ValueError:
        raise HistoeqError(f"--cv-fold must look like i/k (fold i of k, counted from 0), got {spec!r}") from None
    if k < 2 or not 0 <= i < k:
        raise HistoeqError(f"--cv-fold {spec}: need k >= 2 and 0 <= i < k")
    return i, k


def patient_folds(index: pd.DataFrame, k: int) -> pd.Series:
    """Fold number (0..k-1) of every row of the train and val splits, -1 for every other row (test, unsplit).

    Deterministic for (patients, labels, k); needs at least k patients in the pool."""
    pool = index["split"].isin(POOL_SPLITS).to_numpy()
    patients = index.loc[pool, "patient"].astype(str).to_numpy()
    n_patients = len(np.unique(patients))
    if n_patients < k:
        raise HistoeqError(f"{k}-fold cross-validation needs at least {k} train/val patients, found {n_patients}")
    folds = np.full(len(index), -1, dtype=np.int64)
    labels = index.loc[pool, "label"].to_numpy()
    splitter = StratifiedGroupKFold(n_splits=k)
    pool_rows = np.flatnonzero(pool)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups=patients)):
        folds[pool_rows[held_out]] = fold
    return pd.Series(folds, index=index.index, name="fold")


def cv_splits(index: pd.DataFrame, fold: int, k: int) -> pd.Series:
    """The split column for fold `fold` of `k`: its patients become "val", the other train/val patients "train";
    rows outside the pool keep their split."""
    folds = patient_folds(index, k)
    splits = index["split"].astype(str).copy()
    in_pool = folds >= 0
    splits[in_pool & (folds == fold)] = "val"
    splits[in_pool & (folds != fold)] = "train"
    return splits
