"""Every model trains a few steps on real IDC patches and is evaluated at 8 rotations (layout, keys, ranges)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.test_train_helpers import FAST_TRAIN, small_idc_fixture_path, small_threads

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def small_idc(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    small_threads()
    return small_idc_fixture_path(idc_dir, tmp_path_factory)


@pytest.mark.parametrize("model", ["cnn", "p4", "p4m", "se2_c4"])
def test_train_then_eval_rotations(model: str, small_idc: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    extra: list[str] = []
    code, out, err = run_cli(["train", "--data", small_idc, "--model", model, "--out", run, "--fraction", "0.5",
                              "--augment", "rot90", *FAST_TRAIN, *extra], capsys)
    assert code == 0, err
    assert {"best.pt", "last.pt", "metrics.jsonl", "run.json", "fraction_ids.json"} <= {p.name for p in run.iterdir()}
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "temporary files left behind"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["options"]["model"] == model
    assert info["fraction"]["n_train"] == 80 and len(info["fraction"]["sha256"]) == 64
    assert len(json.loads((run / "fraction_ids.json").read_text())["ids"]) == 80
    assert info["versions"]["torch"] == torch.__version__ and "commit" in info["git"]
    assert info["model_config"]["name"] == model
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and 0.0 <= lines[0]["val_auc"] <= 1.0 and math.isfinite(lines[0]["train_loss"])
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["format"] == "histoeq-checkpoint" and ckpt["tile_px"] == 50 and ckpt["classes"] == ["non-IDC", "IDC"]

    code, out, err = run_cli(["eval", run, "--data", small_idc, "--out", tmp_path / "eval", "--rotations", "8",
                              "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert (tmp_path / "eval" / "auc_vs_angle.png").stat().st_size > 1000
    assert report["split"] == "test" and report["rotations"] == 8 and "slide context" in report["context"]
    result = report["runs"][0]
    assert [v["angle"] for v in result["views"]] == [k * 45.0 for k in range(8)]
    assert [v["exact"] for v in result["views"]] == [k % 2 == 0 for k in range(8)]
    for view in result["views"]:
        for key in ("auc", "accuracy", "balanced_accuracy", "f1"):
            assert 0.0 <= view[key] <= 1.0
        assert 0.0 <= view["invariance_mean"] <= view["invariance_max"] <= 1.0
    assert result["views"][0]["invariance_max"] == 0.0
    assert result["invariance"]["interpolated"]["views"] == 4 and result["invariance"]["exact"]["views"] == 3
    assert 0.0 <= result["label_change_fraction"] <= 1.0
    assert "AUC" in out and "eval.json" in out


def test_albumentations_presets_train(small_idc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rotate/stain go through the data area's albumentations transform (per patch, threads) before batch D4."""
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "cnn", "--out", tmp_path / "run", "--augment",
                            "rotate+stain+rot90", "--num-workers", "2", *FAST_TRAIN], capsys)
    assert code == 0, err
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["options"]["augment"] == "rotate+stain+rot90" and info["status"] == "finished"


def test_orientations_option_points_to_the_model_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import assert_one_line_error

    code, _, err = run_cli(["train", "--data", tmp_path, "--model", "se2", "--orientations", "16", "--out",
                            tmp_path / "run"], capsys)
    assert_one_line_error(code, err, "--orientations", "se2_c16")
    assert not (tmp_path / "run").exists()
