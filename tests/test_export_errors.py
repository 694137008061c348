"""Bad inputs to `histoeq export`: exit 2, one line naming the file, no traceback, no .onnx written, and problems
with the output path found before any model work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import assert_one_line_error, run_cli

NORM = {"mean": [0.8, 0.6, 0.75], "std": [0.1, 0.15, 0.1]}


@pytest.fixture(scope="module")
def payload() -> dict:
    from histoeq import models

    torch.manual_seed(1)
    model = models.create("cnn", width=8).eval()
    return {"model_config": dict(model.config), "state_dict": model.state_dict(), "classes": ["non-idc", "idc"],
            "tile_px": 50, "mpp": 4.0, "normalisation": NORM, "epoch": 1}


_BROKEN = {
    "tile_str": ({"tile_px": "fifty"}, "tile_px"),
    "tile_zero": ({"tile_px": 0}, "tile_px"),
    "version_str": ({"version": "x"}, "version"),
    "config_str": ({"model_config": "p4m"}, "model_config"),
    "state_list": ({"state_dict": [1, 2]}, "state_dict"),
    "state_foreign": ({"state_dict": {"weight": torch.zeros(2)}}, "weights do not fit"),
    "model_bogus": ({"model_config": {"name": "bogus"}}, "unknown model 'bogus'"),
    "mpp_negative": ({"mpp": -1.0}, "mpp"),
    "mpp_missing": ({"mpp": None}, "µm/px"),
    "norm_str": ({"normalisation": "imagenet"}, "normalisation"),
    "classes_three": ({"classes": ["a", "b", "c"]}, "3 classes"),
}


@pytest.mark.parametrize("case", sorted(_BROKEN))
def test_broken_checkpoint_is_one_line_naming_it(payload: dict, tmp_path: Path, capsys, case: str) -> None:
    from histoeq.runs.checkpoint import save_checkpoint

    change, fragment = _BROKEN[case]
    ckpt = save_checkpoint(tmp_path / f"{case}.pt", {**payload, **change})
    code, _, err = run_cli(["export", ckpt, "--out", tmp_path / "m.onnx"], capsys)
    assert_one_line_error(code, err, f"{case}.pt", fragment)
    assert not (tmp_path / "m.onnx").exists()


def test_unusable_output_is_refused_before_loading(payload: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    from histoeq.runs import checkpoint
    from histoeq.runs.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "run" / "best.pt", payload)

    def no_model_work(*_: object) -> None:
        raise AssertionError("the output path must be checked before the model is loaded")

    monkeypatch.setattr(checkpoint, "load_model", no_model_work)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "m.onnx").mkdir()
    for out, fragment in ((tmp_path / "m.onnx", "is a directory"), (tmp_path / "afile" / "m.onnx", "is a file")):
        code, _, err = run_cli(["export", tmp_path / "run", "--out", out], capsys)
        assert_one_line_error(code, err, str(out), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "m.onnx", "run"]


def test_mpp_option_exports_a_run_without_one_and_refuses_a_contradiction(
    payload: dict, tmp_path: Path, capsys
) -> None:
    from histoeq.infer import OnnxTileModel
    from histoeq.runs.checkpoint import save_checkpoint

    no_mpp = save_checkpoint(tmp_path / "no_mpp.pt", {**payload, "mpp": None})
    code, _, err = run_cli(["export", no_mpp, "--mpp", "2.0", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert OnnxTileModel(tmp_path / "m.onnx", "cpu").metadata.mpp == 2.0

    with_mpp = save_checkpoint(tmp_path / "with_mpp.pt", payload)
    code, _, err = run_cli(["export", with_mpp, "--mpp", "2.0", "--out", tmp_path / "m2.onnx"], capsys)
    assert_one_line_error(code, err, "with_mpp.pt", "4.0 µm/px")
    code, _, err = run_cli(["export", no_mpp, "--mpp", "-1", "--out", tmp_path / "m3.onnx"], capsys)
    assert_one_line_error(code, err, "--mpp")
    assert not (tmp_path / "m2.onnx").exists() and not (tmp_path / "m3.onnx").exists()


@pytest.mark.parametrize("opset", ["17", "13", "99"])
def test_opset_the_exporter_cannot_write_is_refused(payload: dict, tmp_path: Path, capsys, opset: str) -> None:
    """Below 18 the exporter's version converter fails on this graph and silently keeps opset 18 (printing a
    traceback); above onnx's newest it cannot exist. Either way: one line, no file."""
    from histoeq.runs.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "run" / "best.pt", payload)
    code, _, err = run_cli(["export", ckpt, "--out", tmp_path / "m.onnx", "--opset", opset], capsys)
    assert_one_line_error(code, err, "--opset must be between 18")
    assert not (tmp_path / "m.onnx").exists()
