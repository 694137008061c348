"""The G-CNN papers' three claims, tested on a sweep's cells with the seeds as the unit of replication.

* C1: a G-CNN trained *without* geometric augmentation against the baseline CNN trained *with* it, same fraction;
* C2: a G-CNN trained on a smaller fraction against the baseline CNN on the largest fraction;
* C3: how much each model's metrics move over the evaluated angles.

C1 and C2 are differences of means over seeds with a Welch 95 % interval (the seeds of two cells are independent
and their variances differ: a G-CNN's spread over seeds is not the CNN's), so a claim reads "higher", "lower" or
"not separated" (the interval holds 0) instead of a bare ranking of two means. A sweep tests many such differences
at once, so each row also carries its Welch p-value and Holm's adjustment over all rows of one metric, with the
verdict that survives it (``verdict_holm``). C3 is a per-cell property and is averaged over seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from histoeq.evaluate.patients import holm

CLAIM_METRICS = ("auc_mean_angles", "balanced_accuracy_mean_angles", "f1_mean_angles")
CLAIM_COLUMNS = ["claim", "model", "augment", "fraction", "versus", "metric", "seeds", "seeds_versus", "mean",
                 "mean_versus", "difference", "ci95_low", "ci95_high", "verdict", "p_value", "p_holm", "verdict_holm"]


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(mean(a) - mean(b), its standard error, Welch-Satterthwaite degrees of freedom); NaN se below 2 values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, 0.0, math.nan
    return diff, se, (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a`` minus mean of ``b`` and its Welch t-interval; NaN bounds when either side has < 2 values."""
    diff, se, dof = _welch(a, b)
    if math.isnan(se):
        return diff, math.nan, math.nan
    if se == 0.0:
        return diff, diff, diff
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
    return diff, diff - half, diff + half


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Welch t-test p-value of mean(a) == mean(b); NaN when either side has < 2 values."""
    diff, se, dof = _welch(a, b)
    if math.isnan(se):
        return math.nan
    if se == 0.0:
        return 1.0 if diff == 0.0 else 0.0
    return float(2.0 * stats.t.sf(abs(diff) / se, dof))


def _verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "too few seeds"
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "not separated"


def _values(cells: pd.DataFrame, model: str, augment: str, fraction: float, metric: str) -> np.ndarray:
    part = cells[(cells["model"] == model) & (cells["augment"] == augment) & np.isclose(cells["fraction"], fraction)]
    return part[metric].to_numpy(dtype=float)


def _comparison(claim: str, cells: pd.DataFrame, a: tuple[str, str, float], b: tuple[str, str, float],
                metric: str) -> dict | None:
    va, vb = _values(cells, *a, metric), _values(cells, *b, metric)
    if len(va) == 0 or len(vb) == 0:
        return None
    diff, low, high = welch_interval(va, vb)
    return {"claim": claim, "model": a[0], "augment": a[1], "fraction": a[2],
            "versus": f"{b[0]} / {b[1]} @ {b[2]:g}", "metric": metric, "seeds": len(va), "seeds_versus": len(vb),
            "mean": float(va.mean()), "mean_versus": float(vb.mean()), "difference": diff, "ci95_low": low,
            "ci95_high": high, "verdict": _verdict(low, high), "p_value": welch_p(va, vb)}


def claim_comparisons(cells: pd.DataFrame, baseline: str = "cnn", augmented: str = "rot90",
                      metrics: tuple[str, ...] = CLAIM_METRICS) -> pd.DataFrame:
    """C1 and C2 rows for every G-CNN in ``cells`` (one row per summary.csv cell) against ``baseline``."""
    rows = []
    fractions = sorted(cells["fraction"].unique())
    full = max(fractions) if fractions else 1.0
    gcnns = sorted(m for m in cells["model"].unique() if m != baseline)
    for model in gcnns:
        for metric in metrics:
            for fraction in fractions:
                rows.append(_comparison("C1", cells, (model, "none", fraction), (baseline, augmented, fraction),
                                        metric))
            for fraction in fractions:
                if fraction < full:
                    for base_aug in (augmented, "none"):
                        rows.append(_comparison("C2", cells, (model, "none", fraction), (baseline, base_aug, full),
                                                metric))
    table = pd.DataFrame.from_records([r for r in rows if r is not None], columns=CLAIM_COLUMNS)
    return with_holm(table)


def with_holm(table: pd.DataFrame, level: float = 0.05) -> pd.DataFrame:
    """Holm-adjusted p-values over the rows of each metric (rows without a p-value are left out of the family),
    and the verdict that holds after the adjustment: the direction when ``p_holm < level``, else "not separated"."""
    table = table.copy()
    table["p_holm"] = math.nan
    for _, part in table.groupby("metric", sort=False):
        tested = part["p_value"].notna()
        if tested.any():
            table.loc[part.index[tested], "p_holm"] = holm(part.loc[tested, "p_value"].tolist())
    direction = np.where(table["difference"] > 0, "higher", "lower")
    table["verdict_holm"] = np.where(table["p_holm"].isna(), "too few seeds",
                                     np.where(table["p_holm"] < level, direction, "not separated"))
    return table


def angle_spread(cells: pd.DataFrame) -> pd.DataFrame:
    """C3 per (model, augment, fraction): AUC range over all angles and over the exact ones, label changes over the
    angles and (when the cells have it) over the 8 D4 transforms."""
    angle_cols = [c for c in cells.columns if c.startswith("auc_") and c[4:].replace(".", "").isdigit()]
    exact_cols = [c for c in angle_cols if float(c[4:]) % 90 == 0]
    frame = cells.assign(auc_range_angles=cells[angle_cols].max(axis=1) - cells[angle_cols].min(axis=1),
                         auc_range_exact=cells[exact_cols].max(axis=1) - cells[exact_cols].min(axis=1))
    columns = ["auc_range_angles", "auc_range_exact", "spread_exact", "label_change_fraction"]
    columns += [c for c in ("label_change_d4",) if c in cells]  # absent in sweeps from before it existed
    grouped = frame.groupby(["model", "augment", "fraction"], sort=True)[columns]
    return grouped.mean().join(grouped.size().rename("seeds")).reset_index()
