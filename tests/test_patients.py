"""Patient-level statistics, spatial context on a tile grid and `histoeq cv-compare` (docs/protocol.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from histoeq.evaluate.patients import (
    choose_threshold,
    holm,
    mean_patient_auc,
    paired_auc_difference,
    per_patient_auc,
    pooled_metric,
)
from histoeq.slide.context import smooth_on_grid
from tests.conftest import run_cli


def test_holm_step_down_by_hand() -> None:
    # sorted 0.005*5, 0.01*4, 0.03*3, 0.04*2 (raised to 0.09 by monotonicity), 0.2*1
    assert holm([0.01, 0.04, 0.03, 0.2, 0.005]) == pytest.approx([0.04, 0.09, 0.09, 0.2, 0.025])


def test_per_patient_auc_excludes_one_class_patients_and_bootstrap_brackets_the_mean() -> None:
    rng = np.random.default_rng(1)
    patients = np.repeat(["a", "b", "c", "d", "e"], 40)
    labels = rng.integers(0, 2, patients.size)
    labels[patients == "e"] = 0  # one class only
    scores = labels * 0.6 + rng.random(patients.size)
    table = per_patient_auc(labels, scores, patients)
    assert table.set_index("patient").loc["e", "auc"] != table.set_index("patient").loc["e", "auc"]  # NaN
    est = mean_patient_auc(table, n_boot=2000)
    assert est.value == pytest.approx(table["auc"].dropna().mean())
    assert est.low <= est.value <= est.high and est.high - est.low > 0


def test_paired_difference_detects_a_consistent_gain_and_not_noise() -> None:
    base = pd.DataFrame({"patient": list("abcdefghij"), "auc": np.linspace(0.8, 0.9, 10)})
    better = base.assign(auc=base["auc"] + 0.02)
    est = paired_auc_difference(base, better, n_boot=2000)
    assert est.value == pytest.approx(0.02) and est.low > 0 and est.p < 0.01
    noisy = base.assign(auc=base["auc"] + np.array([0.02, -0.02] * 5))
    est = paired_auc_difference(base, noisy, n_boot=2000)
    assert est.low < 0 < est.high and est.p > 0.5


@pytest.mark.parametrize("metric", ["balanced_accuracy", "f1"])
def test_pooled_rates_match_scoring_each_resample_of_patients(metric: str) -> None:
    """Balanced accuracy and F1 are summed from per-patient confusion counts: the same figures as concatenating
    each resample's patches and scoring them with scikit-learn, including resamples with one class only."""
    rng = np.random.default_rng(4)
    patients = np.repeat(["a", "b", "c", "d", "e", "f"], [30, 12, 25, 40, 8, 20])
    labels = rng.integers(0, 2, patients.size)
    labels[patients == "b"] = 0  # a patient without positives: some resamples lack a class
    labels[patients == "e"] = 1
    scores = labels * 0.3 + rng.random(patients.size)
    threshold, n_boot = 0.55, 300
    est = pooled_metric(labels, scores, patients, metric, threshold, n_boot=n_boot, seed=7)

    def score(sel_labels: np.ndarray, sel_scores: np.ndarray) -> float:
        called = (sel_scores >= threshold).astype(int)
        if metric == "f1":
            return f1_score(sel_labels, called, zero_division=0)
        return balanced_accuracy_score(sel_labels, called) if np.unique(sel_labels).size == 2 else np.nan

    names = np.unique(patients)
    picks = np.random.default_rng(7).integers(0, len(names), size=(n_boot, len(names)))
    reps = []
    for pick in picks:
        rows = np.concatenate([np.flatnonzero(patients == names[k]) for k in pick])
        reps.append(score(labels[rows], scores[rows]))
    reps = np.array(reps)
    assert est.value == pytest.approx(score(labels, scores), abs=1e-12)
    assert [est.low, est.high] == pytest.approx(np.percentile(reps[np.isfinite(reps)], [2.5, 97.5]), abs=1e-12)
    assert est.low < est.value < est.high


def test_threshold_maximises_balanced_accuracy() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.9])
    assert 0.3 < choose_threshold(labels, scores) <= 0.35


@pytest.mark.parametrize("kernel", ["box3", "binomial3", "binomial5"])
def test_context_commutes_with_the_eight_grid_symmetries(kernel: str) -> None:
    rng = np.random.default_rng(0)
    present = rng.random((9, 7)) < 0.7  # holes: background tiles
    rows, cols = np.nonzero(present)
    values = rng.random(rows.size)
    smoothed = smooth_on_grid(cols * 50.0, rows * 50.0, values, 50.0, kernel)
    assert not np.allclose(smoothed, values)
    for k in range(4):
        for mirror in (False, True):
            grid = np.full(present.shape, np.nan)
            grid[rows, cols] = np.arange(rows.size)  # which tile sits where
            moved = np.rot90(grid[:, ::-1] if mirror else grid, k)
            r2, c2 = np.nonzero(~np.isnan(moved))
            order = moved[r2, c2].astype(int)
            out = smooth_on_grid(c2 * 50.0, r2 * 50.0, values[order], 50.0, kernel)
            np.testing.assert_array_equal(out, smoothed[order])  # exactly the transformed result


def test_context_renormalises_over_present_neighbours() -> None:
    # Two tiles side by side: box3 gives each the mean of both; a lone tile keeps its value.
    out = smooth_on_grid(np.array([0.0, 50.0, 500.0]), np.zeros(3), np.array([0.2, 0.6, 0.9]), 50.0, "box3")
    assert out == pytest.approx([0.4, 0.4, 0.9])


def _oof(path: Path, shift: float, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(8):
        for i in range(30):
            label = int(i % 3 == 0)
            score = np.clip(0.3 + 0.3 * label + shift * label + 0.25 * rng.standard_normal(), 0, 1)
            rows.append({"model": "p4m", "augment": "none", "fraction": 1.0, "seed": p % 2, "fold": p % 2,
                         "id": p * 100 + i, "patient": f"P{p}", "x": (i % 6) * 50, "y": (i // 6) * 50,
                         "label": label, "p_non-IDC": 1 - score, "p_IDC": score})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_cv_compare_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _oof(tmp_path / "a.csv", 0.0, 0)
    b = _oof(tmp_path / "b.csv", 0.3, 0)
    code, out, err = run_cli(["cv-compare", f"ref={a}", f"better={b}", f"ctx={a}@box3", "--n-boot", "500",
                              "--out", tmp_path / "cmp"], capsys)
    assert code == 0, err
    cmp = pd.read_csv(tmp_path / "cmp" / "comparisons.csv")
    assert list(cmp["comparison"]) == ["better − ref", "ctx − ref"]
    assert bool(cmp.loc[0, "adopted"]) and cmp.loc[0, "ci95_low"] > 0
    assert (cmp["p_holm"] >= cmp["p"]).all()
    per_patient = pd.read_csv(tmp_path / "cmp" / "per_patient.csv")
    assert set(per_patient["arm"]) == {"ref", "better", "ctx"} and len(per_patient) == 24
    code, _, err = run_cli(["cv-compare", f"ref={a}", f"bad={tmp_path / 'missing.csv'}"], capsys)
    assert code == 2 and "missing.csv" in err and len(err.strip().splitlines()) == 1
