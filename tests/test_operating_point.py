"""The operating point (threshold and context kernel chosen for a model): stored at export, read back, used by
predict unless an option overrides it, and recorded with its source."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from histoeq.export.metadata import ModelMetadata, OperatingPoint, parse_metadata
from histoeq.infer import OnnxTileModel
from histoeq.infer.operating_point import resolve_operating_point
from tests.conftest import assert_one_line_error, export_tiny_onnx, run_cli

POINT = OperatingPoint(0.3, "box3", "pooled OOF balanced accuracy, 5-fold patient CV")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {"plain": export_tiny_onnx(folder / "plain.onnx"),
            "point": export_tiny_onnx(folder / "point.onnx", operating_point=POINT)}


@pytest.fixture
def slide(random_rgb_tiff: Path) -> Path:
    return random_rgb_tiff


def _predict(capsys, slide: Path, model: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["predict", slide, "--model", model, "--out", out, "--device", "cpu", "--min-tissue", "0",
                    "--outputs", "csv", *extra], capsys)


def test_export_round_trip_with_and_without_an_operating_point(models: dict[str, Path]) -> None:
    assert OnnxTileModel(models["point"], "cpu").metadata.operating_point == POINT
    assert OnnxTileModel(models["plain"], "cpu").metadata.operating_point is None
    props = {p.key: p.value for p in onnx.load(str(models["point"])).metadata_props}
    assert props["histoeq.operating_point"] == f"threshold 0.3, context box3 (chosen by {POINT.chosen_by})"
    plain = {p.key: p.value for p in onnx.load(str(models["plain"])).metadata_props}
    assert "operating_point" not in json.loads(plain["histoeq"]) and "histoeq.operating_point" not in plain


def test_metadata_without_the_key_or_with_a_bare_threshold_parses() -> None:
    meta = ModelMetadata(model_name="tiny", model_config={}, group={"name": "none"}, classes=["a", "b"], tile_px=50,
                         mpp=4.0, normalisation={"mean": [0.5] * 3, "std": [0.25] * 3})
    assert parse_metadata(meta.to_props(), "m.onnx").operating_point is None
    doc = json.loads(meta.to_props()["histoeq"])
    parsed = parse_metadata({"histoeq": json.dumps({**doc, "operating_point": {"threshold": 0.25}})}, "m.onnx")
    assert parsed.operating_point == OperatingPoint(0.25, "none", "")


def test_resolution_option_then_model_then_default() -> None:
    point = resolve_operating_point(None, None, POINT)
    assert (point.region_threshold, point.context) == (0.3, "box3")
    assert point.sources == {"region_threshold": "model", "context": "model"}
    point = resolve_operating_point(0.7, None, POINT)
    assert (point.region_threshold, point.context, point.sources["region_threshold"]) == (0.7, "box3", "option")
    point = resolve_operating_point(None, "none", None)
    assert (point.region_threshold, point.context) == (0.5, "none")
    assert point.sources == {"region_threshold": "default", "context": "option"}


def test_predict_uses_the_models_operating_point_and_records_its_source(models, slide, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = _predict(capsys, slide, models["point"], out)
    assert code == 0 and "done" in stdout, err
    assert "model operating point: threshold 0.3, context box3" in stdout
    record = json.loads((out / "s.json").read_text())
    assert record["operating_point"] == {"region_threshold": 0.3, "context": "box3", "chosen_by": POINT.chosen_by,
                                         "sources": {"region_threshold": "model", "context": "model"}}
    assert record["options"]["region_threshold"] == 0.3 and record["context"]["kernel"] == "box3"
    assert record["settings"]["sources"] == {"region_threshold": "model", "context": "model"}
    assert record["summary"]["threshold"] == 0.3  # the positive area is measured at the model's threshold
    settings = json.loads((out / ".histoeq-predict.json").read_text())
    assert settings["options"]["context"] == "box3" and settings["sources"]["context"] == "model"

    # The same effective values given as options: the folder's outputs are complete.
    code, stdout, err = _predict(capsys, slide, models["point"], out, "--region-threshold", "0.3")
    assert code == 0 and "skipped" in stdout, err
    # Other effective values: refused, as for any change of options.
    code, _, err = _predict(capsys, slide, models["point"], out, "--region-threshold", "0.7")
    assert_one_line_error(code, err, "region_threshold=0.3", "--overwrite")


def test_an_explicit_option_overrides_the_model(models, slide, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = _predict(capsys, slide, models["point"], out, "--region-threshold", "0.7", "--context", "none")
    assert code == 0, err
    record = json.loads((out / "s.json").read_text())
    assert record["operating_point"]["sources"] == {"region_threshold": "option", "context": "option"}
    assert record["operating_point"]["region_threshold"] == 0.7 and record["context"]["kernel"] == "none"
    assert record["context"]["column"] is None


def test_a_model_without_an_operating_point_keeps_the_defaults(models, slide, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = _predict(capsys, slide, models["plain"], out, "--context", "binomial3")
    assert code == 0 and "operating point" not in stdout, err
    point = json.loads((out / "s.json").read_text())["operating_point"]
    assert point == {"region_threshold": 0.5, "context": "binomial3", "chosen_by": None,
                     "sources": {"region_threshold": "default", "context": "option"}}


def test_cli_export_stores_the_operating_point(tmp_path, capsys) -> None:
    from histoeq import models
    from histoeq.runs.checkpoint import save_checkpoint
    from tests.test_export import _info

    torch.manual_seed(1)
    model = models.create("cnn", width=8).eval()
    save_checkpoint(tmp_path / "run" / "best.pt", {**_info(model), "state_dict": model.state_dict(), "epoch": 1})
    code, out, err = run_cli(["export", tmp_path / "run", "--out", tmp_path / "m.onnx", "--threshold", "0.42",
                              "--context", "binomial5", "--chosen-by", "pooled OOF [BA]"], capsys)
    assert code == 0, err
    assert "operating point: threshold 0.42, context binomial5 (chosen by pooled OOF [BA])" in out
    assert OnnxTileModel(tmp_path / "m.onnx", "cpu").metadata.operating_point == OperatingPoint(
        0.42, "binomial5", "pooled OOF [BA]")


@pytest.mark.parametrize("args, fragment", [
    (["--threshold", "1.5"], "threshold must be a number in (0, 1), got 1.5"),
    (["--threshold", "0"], "threshold must be a number in (0, 1), got 0.0"),
    (["--threshold", "nan"], "threshold must be a number in (0, 1), got nan"),
    (["--threshold", "0.4", "--context", "gauss"], "unknown context kernel 'gauss'"),
    (["--context", "box3"], "give its --threshold too"),
    (["--chosen-by", "CV"], "give its --threshold too"),
])
def test_cli_export_refuses_a_bad_operating_point(tmp_path, capsys, args: list[str], fragment: str) -> None:
    (tmp_path / "run").mkdir()
    code, _, err = run_cli(["export", tmp_path / "run", "--out", tmp_path / "m.onnx", *args], capsys)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "m.onnx").exists()


def test_doctor_shows_the_default_models_operating_point(models, monkeypatch) -> None:
    from histoeq.infer import model_index
    from histoeq.lab.doctor import _default_model

    for name, shown in [("point", f"threshold 0.3, context box3 (chosen by {POINT.chosen_by})"),
                        ("plain", "none stored (predict uses threshold 0.5, context none)")]:
        entry = model_index.ModelEntry(name, models[name], "0" * 64)
        monkeypatch.setattr(model_index, "find_model", lambda entry=entry: entry)
        items = {item.name: item.value for item in _default_model().items}
        assert items["operating point"] == shown


def test_eval_reads_the_operating_point_of_an_exported_model(models: dict[str, Path]) -> None:
    import torch

    from histoeq.lab.model_files import load_onnx_predictor

    cpu = torch.device("cpu")
    assert load_onnx_predictor(models["point"], cpu).info["operating_point"] == {
        "threshold": POINT.threshold, "context": POINT.context, "chosen_by": POINT.chosen_by}
    assert load_onnx_predictor(models["plain"], cpu).info["operating_point"] is None
