"""`histoeq eval --threshold`: binary labels at the chosen threshold, by default the model's operating point.

A model exported with an operating point is used by `predict` at its threshold; `eval` must score it at the same
threshold, or the balanced accuracy and F1 it reports are not the ones a user of `predict` gets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from histoeq.data.dataset import DatasetWriter
from histoeq.evaluate.metrics import classification_metrics, predicted_labels
from histoeq.evaluate.predictors import Predictor
from histoeq.lab import model_files
from tests.conftest import assert_one_line_error, run_cli


def _darkness(batch: np.ndarray) -> np.ndarray:
    p = 1.0 - batch.reshape(len(batch), -1).mean(axis=1) / 255.0
    return np.stack([1.0 - p, p], axis=1)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """(plain model, model with an operating point at 0.6, dataset of 40 test patches of 8 px over 2 patients)."""
    def load(path: Path, device: object) -> Predictor:
        point = json.loads(path.read_text())
        return Predictor(name=str(path), predict=_darkness, tile_px=8, info={"operating_point": point})

    monkeypatch.setattr(model_files, "PREDICTOR_LOADERS", {**model_files.PREDICTOR_LOADERS, ".fake": load})
    plain, chosen = tmp_path / "plain.fake", tmp_path / "chosen.fake"
    plain.write_text("null")
    chosen.write_text(json.dumps({"threshold": 0.6, "context": "none", "chosen_by": "test"}))
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = rng.integers(60, 200, (40, 8, 8, 3)).astype(np.uint8)  # darkness 0.2..0.76, unrelated to the label
    with DatasetWriter(tmp_path / "ds", tile_px=8, classes=["neg", "pos"]) as writer:
        writer.add(images, [{"label": int(k), "patient": f"p{i // 20}", "split": "test"} for i, k in enumerate(labels)])
    return plain, chosen, tmp_path / "ds"


def _run(capsys, model: Path, data: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    code, _, err = run_cli(["eval", model, "--data", data, "--out", out, "--rotations", 1, "--device", "cpu",
                            *extra], capsys)
    record = json.loads((out / "eval.json").read_text())["runs"][0] if code == 0 else {}
    return code, record, err


def test_binary_labels_follow_the_threshold() -> None:
    probs = np.array([[0.7, 0.3], [0.45, 0.55], [0.2, 0.8]])
    assert predicted_labels(probs).tolist() == [0, 1, 1]
    assert predicted_labels(probs, 0.6).tolist() == [0, 0, 1]
    assert predicted_labels(probs[:, 1], 0.25).tolist() == [1, 1, 1]
    labels = np.array([0, 0, 1])
    assert classification_metrics(labels, probs)["balanced_accuracy"] == pytest.approx(0.75)
    assert classification_metrics(labels, probs, 0.6)["balanced_accuracy"] == pytest.approx(1.0)


def test_eval_scores_at_the_models_operating_point_unless_told(setup, tmp_path, capsys) -> None:
    plain, chosen, data = setup
    code, default, err = _run(capsys, plain, data, tmp_path / "plain")
    assert code == 0, err
    assert (default["threshold"], default["threshold_source"]) == (0.5, "default")
    code, model, err = _run(capsys, chosen, data, tmp_path / "chosen")
    assert code == 0, err
    assert (model["threshold"], model["threshold_source"]) == (0.6, "model")
    code, option, err = _run(capsys, chosen, data, tmp_path / "option", "--threshold", "0.6")
    assert code == 0, err
    assert option["threshold_source"] == "option"
    assert option["summary"]["f1"]["identity"] == model["summary"]["f1"]["identity"]
    # the same probabilities at 0.5 and at 0.6 give other labels, so the figures must differ
    assert model["summary"]["f1"]["identity"] != default["summary"]["f1"]["identity"]
    assert [p["accuracy"] for p in model["per_patient"]] != [p["accuracy"] for p in default["per_patient"]]


@pytest.mark.parametrize("value", ["0", "1", "1.5", "nan"])
def test_a_threshold_outside_0_1_is_refused(setup, tmp_path, capsys, value: str) -> None:
    plain, _, data = setup
    code, _, err = _run(capsys, plain, data, tmp_path / "ev", "--threshold", value)
    assert_one_line_error(code, err, "--threshold must be in (0, 1)")
    assert not (tmp_path / "ev" / "eval.json").exists()
