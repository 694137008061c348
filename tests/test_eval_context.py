"""`histoeq eval --context`: each patch's probability combined with its slide neighbours' on the tile grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoeq.data.dataset import DatasetWriter
from histoeq.evaluate.predictors import Predictor
from histoeq.lab import model_files
from tests.conftest import assert_one_line_error, run_cli


def _darkness(batch: np.ndarray) -> np.ndarray:
    return 1.0 - batch.reshape(len(batch), -1).mean(axis=1) / 255.0


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(model_files, "PREDICTOR_LOADERS", {
        **model_files.PREDICTOR_LOADERS,
        ".fake": lambda path, device: Predictor(name=str(path), predict=_darkness, tile_px=8)})
    path = tmp_path / "model.fake"
    path.write_text("stand-in")
    return path


def _grid_dataset(path: Path, with_positions: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Two patients, each a 4 x 5 grid of 8 px patches at IDC-like positions (x, y = 1 + 50 k), a few missing."""
    rng = np.random.default_rng(3)
    rows = []
    for patient in ("a", "b"):
        for gy in range(4):
            for gx in range(5):
                if (gx + gy * 5) % 7 == 3:
                    continue  # background: no tile there
                row = {"label": int(gx >= 2), "patient": patient, "split": "test"}
                if with_positions:
                    row.update(x=1 + 50 * gx, y=1 + 50 * gy)
                rows.append(row)
    labels = np.array([r["label"] for r in rows])
    images = (rng.integers(80, 200, (len(rows), 8, 8, 3)) - 40 * labels[:, None, None, None]).astype(np.uint8)
    with DatasetWriter(path, tile_px=8, classes=["neg", "pos"]) as writer:
        writer.add(images, rows)
    return images, pd.DataFrame(rows)


def test_context_averages_present_neighbours_and_keeps_patch_only(model, tmp_path, capsys):
    images, rows = _grid_dataset(tmp_path / "ds")
    code, out, err = run_cli(["eval", model, "--data", tmp_path / "ds", "--out", tmp_path / "ev", "--rotations", 4,
                              "--device", "cpu", "--context", "box3"], capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "ev" / "predictions.csv", dtype={"patient": str})
    patch = _darkness(images)
    assert np.allclose(table["prob_pos"], patch, atol=1e-6)
    expected = np.empty(len(rows))
    for i, r in rows.iterrows():  # the mean over the tiles of the same patient within one step, itself included
        near = ((rows["patient"] == r["patient"]) & ((rows["x"] - r["x"]).abs() <= 50)
                & ((rows["y"] - r["y"]).abs() <= 50))
        expected[i] = patch[near.to_numpy()].mean()
    assert np.allclose(table["prob_pos_box3"], expected, atol=1e-6)
    assert not np.allclose(expected, patch)
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())["runs"][0]
    assert result["spatial_context"] == "box3" and "patch_only" in result
    assert "patch-only (without context)" in out
    # The grid does not turn with a view: a rotation-invariant patch score gives the same AUC at every angle.
    aucs = [v["auc"] for v in result["views"]]
    assert max(aucs) - min(aucs) < 1e-12


def test_context_needs_positions(model, tmp_path, capsys):
    _grid_dataset(tmp_path / "ds", with_positions=False)
    code, _, err = run_cli(["eval", model, "--data", tmp_path / "ds", "--out", tmp_path / "ev", "--rotations", 1,
                            "--device", "cpu", "--context", "box3"], capsys)
    assert_one_line_error(code, err, "x, y")
    assert not (tmp_path / "ev" / "eval.json").exists()


def test_unknown_context_kernel_is_refused(model, tmp_path, capsys):
    _grid_dataset(tmp_path / "ds")
    code, _, err = run_cli(["eval", model, "--data", tmp_path / "ds", "--out", tmp_path / "ev", "--rotations", 1,
                            "--device", "cpu", "--context", "gauss9"], capsys)
    assert_one_line_error(code, err, "gauss9")


@pytest.fixture
def chosen_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A factory of stand-in exported models whose operating point names a context kernel."""
    def load(path: Path, device: object) -> Predictor:
        point = json.loads(path.read_text())
        return Predictor(name=str(path), predict=_darkness, tile_px=8, info={"operating_point": point})

    monkeypatch.setattr(model_files, "PREDICTOR_LOADERS", {**model_files.PREDICTOR_LOADERS, ".chosen": load})

    def make(name: str, kernel: str) -> Path:
        path = tmp_path / f"{name}.chosen"
        path.write_text(json.dumps({"threshold": 0.5, "context": kernel, "chosen_by": "test"}))
        return path
    return make


def _eval(capsys, models, data: Path, out: Path, *extra) -> tuple[int, dict, str, str]:
    code, stdout, err = run_cli(["eval", *models, "--data", data, "--out", out, "--rotations", 1, "--device", "cpu",
                                 *extra], capsys)
    record = json.loads((out / "eval.json").read_text()) if code == 0 else {}
    return code, record, stdout, err


def test_context_defaults_to_the_models_operating_point(chosen_models, tmp_path, capsys):
    """The threshold stored with a model was chosen for its kernel's probabilities: eval scores both, as predict."""
    _grid_dataset(tmp_path / "ds")
    model = chosen_models("m", "box3")
    code, record, stdout, err = _eval(capsys, [model], tmp_path / "ds", tmp_path / "model")
    assert code == 0, err
    assert (record["spatial_context"], record["spatial_context_source"]) == ("box3", "model")
    assert "context=box3 (model)" in stdout.replace("\n", " ")
    table = pd.read_csv(tmp_path / "model" / "predictions.csv")
    assert not np.allclose(table["prob_pos_box3"], table["prob_pos"])  # scored on the combined probabilities
    assert "patch_only" in record["runs"][0]
    code, record_none, _, err = _eval(capsys, [model], tmp_path / "ds", tmp_path / "none", "--context", "none")
    assert code == 0, err
    assert (record_none["spatial_context"], record_none["spatial_context_source"]) == ("none", "option")
    assert "prob_pos_box3" not in pd.read_csv(tmp_path / "none" / "predictions.csv")
    assert "patch_only" not in record_none["runs"][0]


def test_model_context_without_positions_falls_back_to_patch_only(chosen_models, tmp_path, capsys):
    _grid_dataset(tmp_path / "ds", with_positions=False)
    code, record, stdout, err = _eval(capsys, [chosen_models("m", "box3")], tmp_path / "ds", tmp_path / "ev")
    assert code == 0, err
    assert record["spatial_context"] == "none"
    assert record["spatial_context_source"].startswith("default (") and "x, y" in record["spatial_context_source"]
    assert "note: no spatial context" in stdout


def test_models_with_different_kernels_are_scored_patch_only(chosen_models, tmp_path, capsys):
    _grid_dataset(tmp_path / "ds")
    models = [chosen_models("a", "box3"), chosen_models("b", "binomial5")]
    code, record, stdout, err = _eval(capsys, models, tmp_path / "ds", tmp_path / "ev")
    assert code == 0, err
    assert record["spatial_context"] == "none"
    assert "binomial5" in record["spatial_context_source"] and "box3" in record["spatial_context_source"]
    assert "note: no spatial context" in stdout
