"""Patient-level cross-validation: folds by patient over train+val, test untouched, wired into train and sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoeq.data.folds import cv_splits, parse_fold, patient_folds
from histoeq.errors import HistoeqError
from tests.conftest import run_cli


def _index(n_pool: int = 12, n_test: int = 3, seed: int = 0) -> pd.DataFrame:
    """Patients of very different sizes and IDC prevalence, as in the real data."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_pool + n_test):
        split = "test" if p >= n_pool else ("val" if p % 5 == 0 else "train")
        size, prevalence = int(rng.integers(20, 200)), float(rng.uniform(0.05, 0.6))
        rows += [{"patient": f"P{p:02d}", "label": int(rng.random() < prevalence), "split": split}
                 for _ in range(size)]
    index = pd.DataFrame(rows)
    index.insert(0, "id", np.arange(len(index)))
    return index


def test_folds_partition_the_pool_by_patient_and_leave_test_alone() -> None:
    index = _index()
    folds = patient_folds(index, 5)
    pool = index["split"].isin(["train", "val"])
    assert (folds[~pool] == -1).all() and (folds[pool] >= 0).all()
    assert set(folds[pool]) == set(range(5))
    per_patient = pd.DataFrame({"patient": index["patient"], "fold": folds})[pool].groupby("patient")["fold"]
    assert (per_patient.nunique() == 1).all()  # no patient on both sides of any fold
    for fold in range(5):
        assert index.loc[folds == fold, "label"].nunique() == 2  # stratified: both classes in every fold
    assert folds.equals(patient_folds(index.sample(frac=1.0, random_state=1), 5).sort_index())  # order-free


def test_cv_splits_rotate_validation_over_every_pool_patient() -> None:
    index = _index()
    pool_patients = set(index.loc[index["split"].isin(["train", "val"]), "patient"])
    seen_in_val: set[str] = set()
    for fold in range(4):
        splits = cv_splits(index, fold, 4)
        val = set(index.loc[splits == "val", "patient"])
        train = set(index.loc[splits == "train", "patient"])
        assert val and train and not val & train and val | train == pool_patients
        assert (splits[index["split"] == "test"] == "test").all()
        assert not seen_in_val & val
        seen_in_val |= val
    assert seen_in_val == pool_patients


@pytest.mark.parametrize("spec", ["3", "5/5", "-1/5", "1/1", "a/b", "1/2/3"])
def test_bad_fold_specs_are_refused(spec: str) -> None:
    with pytest.raises(HistoeqError, match="--cv-fold"):
        parse_fold(spec)
    assert parse_fold("4/5") == (4, 5)


def test_more_folds_than_patients_is_refused() -> None:
    with pytest.raises(HistoeqError, match="at least 20 train/val patients, found 6"):
        patient_folds(_index(n_pool=6), 20)


@pytest.mark.realdata
def test_train_on_a_fold_validates_on_its_patients(idc_dir: Path, tmp_path_factory, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from histoeq.data.dataset import PatchDataset
    from tests.test_train_helpers import FAST_TRAIN, small_idc_fixture_path, small_threads

    small_threads()
    data = small_idc_fixture_path(idc_dir, tmp_path_factory)
    index = PatchDataset.open(data).index
    code, _, err = run_cli(["train", "--data", data, "--model", "cnn", "--cv-fold", "1/3", "--out", tmp_path / "r",
                            *FAST_TRAIN], capsys)
    assert code == 0, err
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    expected_val = cv_splits(index, 1, 3) == "val"
    assert run["options"]["cv_fold"] == "1/3" and run["n_val"] == int(expected_val.sum())
    assert run["val_patients"] == sorted(index.loc[expected_val, "patient"].unique())
    train_ids = json.loads((tmp_path / "r" / "fraction_ids.json").read_text())["ids"]
    train_patients = set(index.loc[index["id"].isin(train_ids), "patient"])
    test_patients = set(index.loc[index["split"] == "test", "patient"])
    assert train_patients and not train_patients & set(run["val_patients"]) and not train_patients & test_patients
    # The original val patients are trained on in this fold unless the fold holds them.
    assert set(index.loc[index["split"] == "val", "patient"]) - set(run["val_patients"]) <= train_patients

    # Resuming under another fold is refused, naming the option.
    code, _, err = run_cli(["train", "--data", data, "--model", "cnn", "--cv-fold", "2/3", "--out", tmp_path / "r",
                            "--resume", *FAST_TRAIN], capsys)
    assert code == 2 and "cv_fold" in err
    code, _, err = run_cli(["train", "--data", data, "--model", "cnn", "--cv-fold", "3/3", "--out", tmp_path / "x",
                            *FAST_TRAIN], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "--cv-fold" in lines[0] and not (tmp_path / "x").exists()


@pytest.mark.realdata
def test_sweep_cv_gives_each_seed_its_fold(idc_dir: Path, tmp_path_factory, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_train_helpers import small_idc_fixture_path, small_threads

    small_threads()
    data = small_idc_fixture_path(idc_dir, tmp_path_factory)
    args = ["sweep", "--data", data, "--out", tmp_path / "cv", "--models", "cnn", "--fractions", "1",
            "--augment", "none", "--seeds", "3", "--cv", "3", "--epochs", "1", "--max-steps", "1",
            "--batch-size", "32", "--width", "4", "--rotations", "4", "--device", "cpu"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    cells = pd.read_csv(tmp_path / "cv" / "summary.csv")
    assert sorted(cells["cv_fold"]) == ["0/3", "1/3", "2/3"]
    val_patients = [json.loads((tmp_path / "cv" / "runs" / f"cnn_none_f1_s{s}" / "run.json").read_text())
                    ["val_patients"] for s in range(3)]
    assert not set(val_patients[0]) & set(val_patients[1]) and not set(val_patients[1]) & set(val_patients[2])
    groups = pd.read_csv(tmp_path / "cv" / "summary_groups.csv")
    assert np.isclose(groups["val_auc_mean"].iloc[0], cells["val_auc"].mean())
    # The same folder without --cv would mix protocols: refused.
    without_cv = [a for i, a in enumerate(args) if "--cv" not in (a, args[i - 1])]
    code, _, err = run_cli(without_cv, capsys)
    assert code == 2 and "cv_fold" in err
