"""Label-efficiency subsets and patient-level splits.

The point of equivariant models is data efficiency, so results are reported on 10/25/50/100 % of the training
split. For the comparison to be fair the subsets must be (1) stratified by label, (2) nested: for one seed the 10 %
subset is inside the 25 % one and so on, so a curve over fractions adds data instead of redrawing it, and
(3) deterministic and recorded: every run saves the chosen ids and their `fraction_hash`.

Splits are made per patient, never per patch: neighbouring patches of one patient overlap in content, so a
patch-level split leaks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from histoeq.errors import HistoeqError


class FractionError(HistoeqError, ValueError):
    """A fraction outside (0, 1] or a split that cannot be made."""


def _check_fraction(fraction: float) -> float:
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        raise FractionError(f"fraction must be a number in (0, 1], got {fraction!r}") from None
    if not (0.0 < fraction <= 1.0) or np.isnan(fraction):
        raise FractionError(f"fraction must be in (0, 1], got {fraction}")
    return fraction


def select_fraction(index: pd.DataFrame, fraction: float, seed: int, split: str | None = "train") -> np.ndarray:
    """Sorted ids of a `fraction` of the `split` rows, stratified by label and nested across fractions.

    Each label's ids are put in one seeded random order (independent of `fraction`); a fraction takes the first
    round(fraction * n_label) of them (at least one per label present). Taking prefixes of a fixed order is what
    makes 10 % subset of 25 % subset of 50 % subset of 100 % for the same seed. `split=None` uses all rows.
    """
    fraction = _check_fraction(fraction)
    rows = index if split is None else index[index["split"] == split]
    if rows.empty:
        raise FractionError(f"no rows in split {split!r} to take a fraction of")
    chosen: list[np.ndarray] = []
    for label in sorted(rows["label"].unique()):
        ids = np.sort(rows.loc[rows["label"] == label, "id"].to_numpy(dtype=np.int64))
        # One generator per (seed, label) so the order of one class does not depend on the others' sizes.
        order = np.random.default_rng([int(seed), int(label) & 0xFFFFFFFF]).permutation(ids.size)
        k = max(1, int(round(fraction * ids.size)))
        chosen.append(ids[order[:k]])
    return np.sort(np.concatenate(chosen))


def fraction_hash(ids: np.ndarray | list[int]) -> str:
    """sha256 hex of the sorted ids written as ASCII decimals joined by ',' (stable across numpy versions)."""
    text = ",".join(str(int(i)) for i in np.sort(np.asarray(ids, dtype=np.int64)))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def save_fraction(path: str | Path, ids: np.ndarray, *, fraction: float, seed: int, split: str | None = "train",
                  dataset: str | None = None) -> str:
    """Write the chosen ids with how they were chosen (JSON) so a run can be reproduced; returns the hash."""
    digest = fraction_hash(ids)
    record = {"fraction": fraction, "seed": seed, "split": split, "dataset": dataset, "n": int(len(ids)),
              "sha256": digest, "ids": [int(i) for i in np.sort(np.asarray(ids))]}
    Path(path).write_text(json.dumps(record) + "\n")
    return digest


def patient_splits(index: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0) -> pd.Series:
    """A train/val/test split per *patient* (never per patch), for data that comes without one.

    Patients are shuffled with `seed` and given to test, then val, until each holds about its share of the patches;
    the rest is train. Returns the split per row (aligned with `index`). Needs at least 3 patients.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise FractionError(f"val ({val}) and test ({test}) shares must be in [0, 1) and sum below 1")
    patients = index["patient"].astype(str)
    sizes = patients.value_counts().sort_index()
    if len(sizes) < 3:
        raise FractionError(f"need at least 3 patients for a patient-level split, found {len(sizes)}")
    order = np.random.default_rng(int(seed)).permutation(sizes.index.to_numpy())
    total = int(sizes.sum())
    assignment: dict[str, str] = {}
    filled = {"test": 0, "val": 0}
    targets = {"test": test * total, "val": val * total}
    for patient in order:
        for name in ("test", "val"):
            if targets[name] > 0 and filled[name] < targets[name] and (
                    filled[name] == 0 or filled[name] + sizes[patient] / 2 <= targets[name]):
                assignment[patient] = name
                filled[name] += int(sizes[patient])
                break
        else:
            assignment[patient] = "train"
    if "train" not in assignment.values():
        raise FractionError("too few patients to leave any for training")
    return patients.map(assignment).rename("split")
