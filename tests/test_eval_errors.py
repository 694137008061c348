"""`histoeq eval` on bad options and unwritable outputs: one line, exit 2, and eval.json + plot both or neither.

A plain scoring function registered as a model format stands in for a trained run, so no training is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from histoeq.data.dataset import DatasetWriter
from histoeq.evaluate.predictors import Predictor
from histoeq.lab import model_files
from tests.conftest import assert_one_line_error, run_cli


def _darkness(batch: np.ndarray) -> np.ndarray:
    return 1.0 - batch.reshape(len(batch), -1).mean(axis=1) / 255.0


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(model file, dataset): 12 test patches of 8 px, the positives darker."""
    monkeypatch.setattr(model_files, "PREDICTOR_LOADERS", {
        **model_files.PREDICTOR_LOADERS,
        ".fake": lambda path, device: Predictor(name=str(path), predict=_darkness, tile_px=8)})
    model = tmp_path / "model.fake"
    model.write_text("stand-in")
    rng = np.random.default_rng(0)
    labels = np.arange(12) % 2
    images = (rng.integers(100, 200, (12, 8, 8, 3)) - 60 * labels[:, None, None, None]).astype(np.uint8)
    with DatasetWriter(tmp_path / "ds", tile_px=8, classes=["neg", "pos"]) as writer:
        writer.add(images, [{"label": int(k), "patient": f"p{i}", "split": "test"} for i, k in enumerate(labels)])
    return model, tmp_path / "ds"


def _eval(model: Path, data: Path, out: Path, capsys, *extra) -> tuple[int, str]:
    code, _, err = run_cli(["eval", model, "--data", data, "--out", out, "--rotations", 4, "--device", "cpu",
                            *extra], capsys)
    return code, err


def test_stand_in_model_evaluates(setup, tmp_path, capsys):
    code, err = _eval(*setup, tmp_path / "ev", capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == ["auc_vs_angle.png", "calibration.png",
                                                                   "eval.json", "pr.png", "predictions.csv",
                                                                   "roc.png"]


def test_per_patient_metrics_and_predictions_csv(setup, tmp_path, capsys):
    """eval.json holds each patient's metrics of the unrotated view and predictions.csv every patch's
    probabilities; both agree with the pooled figures and with each other."""
    import pandas as pd

    from histoeq.evaluate.metrics import classification_metrics

    model, _ = setup
    rng = np.random.default_rng(1)
    labels = np.array([0, 1] * 10 + [0, 0, 0, 1] * 5)  # patient a: half positive; b: a quarter
    images = (rng.integers(90, 200, (40, 8, 8, 3)) - 50 * labels[:, None, None, None]).astype(np.uint8)
    data = tmp_path / "two"
    with DatasetWriter(data, tile_px=8, classes=["neg", "pos"]) as writer:
        writer.add(images, [{"label": int(k), "patient": "a" if i < 20 else "b", "split": "test"}
                            for i, k in enumerate(labels)])
    code, err = _eval(model, data, tmp_path / "ev", capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())["runs"][0]
    table = pd.read_csv(tmp_path / "ev" / "predictions.csv", dtype={"patient": str})
    assert list(table.columns) == ["run", "id", "patient", "label", "prob_neg", "prob_pos"]
    assert len(table) == 40 and list(table["id"]) == list(range(40)) and list(table["label"]) == list(labels)
    assert np.allclose(table["prob_pos"], _darkness(images), atol=1e-6)
    assert np.allclose(table["prob_neg"] + table["prob_pos"], 1.0)
    per_patient = {r["patient"]: r for r in result["per_patient"]}
    assert set(per_patient) == {"a", "b"} and [per_patient[p]["n"] for p in "ab"] == [20, 20]
    assert [per_patient[p]["positives"] for p in "ab"] == [10, 5]
    for patient, rows in table.groupby("patient"):
        expected = classification_metrics(rows["label"].to_numpy(), rows[["prob_neg", "prob_pos"]].to_numpy())
        assert per_patient[patient]["auc"] == pytest.approx(expected["auc"])
        assert per_patient[patient]["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"])
        assert per_patient[patient]["mean_score"] == pytest.approx(rows["prob_pos"].mean())
    pooled = classification_metrics(table["label"].to_numpy(), table[["prob_neg", "prob_pos"]].to_numpy())
    assert result["summary"]["auc"]["identity"] == pytest.approx(pooled["auc"])
    # Patient level: the mean of the two patients' AUCs and the pooled AUC, each inside its bootstrap interval.
    level = result["patient_level"]
    assert level["patients"] == 2 and level["excluded_one_class"] == []
    mean = level["mean_patient_auc"]
    assert mean["value"] == pytest.approx(np.mean([per_patient[p]["auc"] for p in "ab"]))
    assert mean["ci95"][0] <= mean["value"] <= mean["ci95"][1]
    assert level["pooled_auc"]["value"] == pytest.approx(pooled["auc"])
    for name in ("balanced_accuracy", "f1"):  # at the threshold the run was scored at, with patient intervals
        estimate = level[f"pooled_{name}"]
        assert estimate["value"] == pytest.approx(pooled[name])
        assert estimate["ci95"][0] <= estimate["value"] <= estimate["ci95"][1]
    assert level["threshold"] == result["threshold"]


@pytest.mark.parametrize("size", [0, -1])
def test_batch_size_below_one(setup, tmp_path, capsys, size):
    code, err = _eval(*setup, tmp_path / "ev", capsys, "--batch-size", size)
    assert code == 2 and err == f"error: --batch-size must be at least 1, got {size}\n", err
    assert not (tmp_path / "ev").exists()


def test_plot_path_is_a_directory(setup, tmp_path, capsys):
    out = tmp_path / "ev"
    (out / "auc_vs_angle.png").mkdir(parents=True)
    (out / "eval.json").write_text('{"old": true}\n')
    code, err = _eval(*setup, out, capsys, "--overwrite")
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {out / 'auc_vs_angle.png'}: cannot write the output: is a directory")
    assert json.loads((out / "eval.json").read_text()) == {"old": True}  # the old report is left as it was
    assert sorted(p.name for p in out.iterdir()) == ["auc_vs_angle.png", "eval.json"]


def test_failed_plot_write_leaves_no_eval_json(setup, tmp_path, capsys, monkeypatch):
    from histoeq.evaluate import report

    def full_disk(fig, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_png", full_disk)
    out = tmp_path / "ev"
    code, err = _eval(*setup, out, capsys)
    assert code == 2 and err == f"error: {out / 'auc_vs_angle.png'}: cannot write the output " \
                                "(No space left on device)\n", err
    assert not out.exists() or list(out.iterdir()) == []


def test_evaluate_predictor_rejects_batch_size_below_one(setup):
    from histoeq.data.dataset import PatchDataset
    from histoeq.errors import HistoeqError
    from histoeq.evaluate.rotation_eval import evaluate_predictor

    with pytest.raises(HistoeqError, match="--batch-size must be at least 1, got 0"):
        evaluate_predictor(_darkness, PatchDataset.open(setup[1]), batch_size=0, split="test", rotations=4)


def _never_called(batch: np.ndarray) -> np.ndarray:
    raise AssertionError("the model ran before its class count was checked")


def test_model_with_other_class_count_is_refused_before_any_work(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(model_files.PREDICTOR_LOADERS, ".three",
                        lambda path, device: Predictor(name=str(path), predict=_never_called, tile_px=8,
                                                       info={"classes": ["a", "b", "c"]}))
    model = tmp_path / "model.three"
    model.write_text("stand-in")
    code, err = _eval(model, setup[1], tmp_path / "ev", capsys)
    assert_one_line_error(code, err, str(model), "3 classes", "has 2 (neg, pos)")
    assert not (tmp_path / "ev").exists()


def test_onnx_model_with_other_class_count_is_refused(setup, tmp_path, capsys):
    import torch

    from histoeq.export.exporter import export_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()
    info = {"model_config": {"name": "tiny"}, "classes": ["a", "b", "c"], "tile_px": 8, "mpp": 4.0,
            "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    model = export_model(net, info, tmp_path / "three.onnx").path
    code, err = _eval(model, setup[1], tmp_path / "ev", capsys)
    assert_one_line_error(code, err, "three.onnx", "3 classes")
    assert not (tmp_path / "ev").exists()


def test_missing_slides_folder_is_refused_even_without_45_degree_views(setup, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for slides, problem in ((tmp_path / "nowhere", "no such --slides folder"), (tmp_path / "afile", "not a folder")):
        code, err = _eval(*setup, tmp_path / "ev", capsys, "--slides", slides)  # --rotations 4: all views exact
        assert_one_line_error(code, err, str(slides), problem)
    assert not (tmp_path / "ev").exists()


def test_one_class_split_records_undefined_auc_without_warnings(setup, tmp_path, capsys, recwarn):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (6, 8, 8, 3)).astype(np.uint8)  # all negative, some predicted positive
    with DatasetWriter(tmp_path / "one", tile_px=8, classes=["neg", "pos"]) as writer:
        writer.add(images, [{"label": 0, "patient": f"p{i}", "split": "test"} for i in range(6)])
    code, out, err = run_cli(["eval", setup[0], "--data", tmp_path / "one", "--out", tmp_path / "ev",
                              "--rotations", 8, "--device", "cpu"], capsys)
    assert code == 0 and err == "", err
    assert [str(w.message) for w in recwarn if issubclass(w.category, UserWarning | RuntimeWarning)] == []
    assert "AUC is undefined" in out
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())["runs"][0]
    assert all(np.isnan(v["auc"]) for v in result["views"]) and np.isnan(result["summary"]["auc"]["mean"])
    assert result["summary"]["accuracy"]["mean"] > 0


def test_metrics_of_a_subset_missing_a_class_are_quiet(recwarn):
    from histoeq.evaluate.metrics import classification_metrics

    probs = np.random.default_rng(0).dirichlet([1, 1, 1], 10)
    multi = classification_metrics(np.arange(10) % 2, probs)  # class 2 absent: macro one-vs-rest AUC undefined
    binary = classification_metrics(np.ones(10, dtype=int), probs[:, :2] / probs[:, :2].sum(1, keepdims=True))
    assert np.isnan(multi["auc"]) and np.isnan(binary["auc"]) and 0 <= binary["balanced_accuracy"] <= 1
    assert [str(w.message) for w in recwarn if issubclass(w.category, UserWarning | RuntimeWarning)] == []
