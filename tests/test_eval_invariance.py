"""At the production tile size (50 px) a trained p4m has zero spread over the 8 D4 views; a plain CNN does not.

Also checks the rotation primitives: interpolated rotation by 90-degree multiples reproduces torch.rot90 exactly,
and the training augmentation's D4 codes are the same transforms as the evaluation views.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from histoeq.evaluate.rotations import View, context_size, exact_view, make_views, reflect_context, rotate_context
from histoeq.train.batches import PatchBatches, parse_augment
from tests.conftest import assert_one_line_error, run_cli
from tests.test_train_helpers import small_idc_fixture_path, small_threads


@pytest.fixture(scope="module")
def small_idc(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    small_threads()
    return small_idc_fixture_path(idc_dir, tmp_path_factory)


@pytest.mark.realdata
def test_p4m_has_zero_d4_spread_cnn_does_not(small_idc: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    spreads = {}
    for model in ("p4m", "cnn"):
        run = tmp_path / model
        code, _, err = run_cli(["train", "--data", small_idc, "--model", model, "--out", run, "--epochs", "1",
                                "--max-steps", "3", "--batch-size", "32", "--width", "4", "--augment", "none",
                                "--device", "cpu"], capsys)
        assert code == 0, err
        code, _, err = run_cli(["eval", run, "--data", small_idc, "--out", tmp_path / f"eval_{model}",
                                "--rotations", "4", "--flips", "--device", "cpu"], capsys)
        assert code == 0, err
        result = json.loads((tmp_path / f"eval_{model}" / "eval.json").read_text())["runs"][0]
        assert result["spread"]["exact_views"] == 8 and len(result["views"]) == 8
        assert result["context"].startswith("not needed")
        spreads[model] = result["spread"]["exact"]
        if model == "p4m":
            assert result["invariance"]["exact"]["max"] <= 1e-5
            assert result["label_change_fraction"] == 0.0
    assert spreads["p4m"] <= 1e-5
    assert spreads["cnn"] > 1e-3


def test_d4_views_match_training_codes() -> None:
    tiles = torch.randint(0, 256, (64, 50, 50, 3), dtype=torch.uint8)
    batches = PatchBatches(tiles.numpy(), np.zeros(64), {"mean": [0.0] * 3, "std": [1.0 / 255] * 3},
                           torch.device("cpu"), parse_augment("rot90"), seed=1)
    batches.start_epoch(0)
    codes = batches.epoch_codes(0)
    assert len(set(codes.tolist())) == 8
    x, _ = batches.batch(torch.arange(64))  # normalisation x * 1 - 0: the augmented pixels as floats
    got = x.round().to(torch.uint8).permute(0, 2, 3, 1)
    for code in range(8):
        view = View(90.0 * (code % 4), mirrored=code >= 4)
        sel = codes == code
        assert torch.equal(got[sel], exact_view(tiles[sel], view)), code


@pytest.mark.parametrize("mirrored", [False, True])
def test_interpolated_rotation_reduces_to_rot90(mirrored: bool) -> None:
    tiles = torch.randint(0, 256, (4, 50, 50, 3), dtype=torch.uint8)
    context = reflect_context(tiles, context_size(50))
    assert torch.equal(context[:, 12:62, 12:62], tiles)
    for angle in (0.0, 90.0, 180.0, 270.0):
        view = View(angle, mirrored)
        assert torch.equal(rotate_context(context, view, 50), exact_view(tiles, view)), angle


def test_views() -> None:
    views = make_views(8, flips=True)
    assert len(views) == 16 and views[0] == View(0.0) and sum(v.exact for v in views) == 8


@pytest.mark.realdata
def test_reflect_padding_without_slides_and_d4_tta(idc_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_train_helpers import build_small_idc

    data = build_small_idc(idc_dir, tmp_path / "noslides", {"train": 40, "val": 16, "test": 16}, with_slides=False)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", data, "--model", "cnn", "--out", run, "--epochs", "1", "--max-steps",
                            "1", "--batch-size", "16", "--width", "4", "--device", "cpu"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["eval", run, "--data", data, "--out", tmp_path / "e", "--rotations", "8",
                              "--invariant-to", "d4", "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["context"].startswith("reflect padding") and "reflect padding" in out
    result = report["runs"][0]
    assert result["tta"] == "d4" and result["context_counts"] == {"slide": 0, "reflect": 16}
    # D4 test-time augmentation makes any model exactly invariant on the 90-degree views.
    assert result["invariance"]["exact"]["max"] <= 1e-5
    # --slides gives real context even when the dataset does not say where its slides are (slide = patient id).
    code, out, err = run_cli(["eval", run, "--data", data, "--out", tmp_path / "e2", "--rotations", "8",
                              "--slides", idc_dir / "slides", "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "e2" / "eval.json").read_text())
    assert report["runs"][0]["context_counts"] == {"slide": 16, "reflect": 0}
    # A broken slide in the folder the user named is an error naming it, not a quiet fall-back to padding.
    broken = tmp_path / "broken-slides"
    broken.mkdir()
    for slide in (idc_dir / "slides").glob("*.tiff"):
        (broken / slide.name).write_bytes(slide.read_bytes()[:4096])
    code, _, err = run_cli(["eval", run, "--data", data, "--out", tmp_path / "e3", "--rotations", "8",
                            "--slides", broken, "--device", "cpu"], capsys)
    assert_one_line_error(code, err, str(broken))
    assert not (tmp_path / "e3" / "eval.json").exists()


@pytest.mark.realdata
def test_evaluate_predictor_hook_with_a_plain_function(small_idc: Path) -> None:
    """Any uint8-batch -> probability callable plugs in; a pixel-mean score is exactly invariant on D4 views."""

    from histoeq.data.dataset import PatchDataset
    from histoeq.evaluate.rotation_eval import evaluate_predictor

    def darkness(batch: np.ndarray) -> np.ndarray:  # tumour patches are darker (denser nuclei)
        return 1.0 - batch.reshape(len(batch), -1).mean(axis=1) / 255.0

    result = evaluate_predictor(darkness, PatchDataset.open(small_idc), split="test", rotations=8, flips=True)
    assert len(result["views"]) == 16 and result["n"] == 48
    assert result["invariance"]["exact"]["max"] < 1e-12 and result["spread"]["exact"] < 1e-12
    assert 0 < result["invariance"]["interpolated"]["mean"] < 0.01  # slide context + bilinear resampling
    assert 0.0 <= result["summary"]["auc"]["identity"] <= 1.0
