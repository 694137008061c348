"""Checkpoints, annotations and model metadata that claim more than they hold: one error line, no big allocation."""

from __future__ import annotations

import re
import time

import pytest

from histoeq.errors import InputError
from tests import hostile


def test_checkpoint_zip_bomb_is_refused_from_its_directory(tmp_path):
    from histoeq.runs.checkpoint import load_checkpoint

    path = hostile.zip_bomb_checkpoint(tmp_path / "bomb.pt", 600 << 20)
    assert path.stat().st_size < 2 << 20
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"unpacks to 0\.6 GiB from 0\.\d MiB"):
        load_checkpoint(path)
    assert time.perf_counter() - start < 2


def test_ordinary_checkpoint_passes_the_archive_check(tmp_path):
    import torch

    from histoeq.runs.checkpoint import check_archive_budget

    torch.save({"weights": torch.zeros(1 << 20)}, tmp_path / "ok.pt")
    check_archive_budget(tmp_path / "ok.pt")


def _features(coords_per_feature: int, features: int) -> str:
    ring = [[i, i % 7] for i in range(coords_per_feature)]
    feature = {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
               "geometry": {"type": "Polygon", "coordinates": [ring]}}
    import json

    return json.dumps({"type": "FeatureCollection", "features": [feature] * features})


def test_annotation_budgets(tmp_path, monkeypatch):
    from histoeq.data import annotations
    from histoeq.data.annotations import RegionAnnotations

    deep = tmp_path / "deep.geojson"
    deep.write_text(hostile.nested_json(100_000))
    with pytest.raises(InputError,
                       match=r"deep.geojson: annotation file nests 100000 levels deep, over the budget of 64"):
        RegionAnnotations.load(deep)
    many = tmp_path / "many.geojson"
    many.write_text(_features(1000, 30))
    monkeypatch.setattr(annotations, "MAX_ANNOTATION_VERTICES", 20_000)
    with pytest.raises(InputError, match="many.geojson: annotations have more than 20,000 vertices"):
        RegionAnnotations.load(many)
    monkeypatch.setattr(annotations, "MAX_ANNOTATION_BYTES", 1000)
    with pytest.raises(InputError, match=r"many.geojson: annotation file is 0 MiB, over the 0 MiB budget"):
        RegionAnnotations.load(many)


def test_annotation_within_budget_with_brackets_in_strings(tmp_path):
    """Brackets inside strings (a class called "[[[") do not count as nesting."""
    from histoeq.data.annotations import RegionAnnotations

    path = tmp_path / "ok.geojson"
    path.write_text(_features(5, 2).replace('"Tumor"', '"' + "[" * 200 + '"'))
    assert RegionAnnotations.load(path).classes == ["[" * 200]


def test_model_metadata_budgets():
    from histoeq.export.metadata import parse_metadata

    deep = '{"format": "histoeq-onnx", "x": ' + hostile.nested_json(100_000) + "}"
    with pytest.raises(InputError, match="m.onnx: histoeq metadata nests 100001 levels deep, over the budget of 32"):
        parse_metadata({"histoeq": deep}, "m.onnx")
    big = '{"format": "histoeq-onnx", "x": "' + "a" * (5 << 20) + '"}'
    with pytest.raises(InputError, match=r"m.onnx: histoeq metadata is 5.0 MiB, over the 4 MiB budget"):
        parse_metadata({"histoeq": big}, "m.onnx")


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    """An exported two-class model, and copies whose 'probabilities' are NaN or shifted logits."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    from histoeq.export.exporter import export_model

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2)).eval()
    info = {"model_config": {"name": "tiny"}, "classes": ["a", "b"], "tile_px": 50, "mpp": 4.0,
            "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    good = export_model(model, info, folder / "good.onnx").path
    models = {"good": good}
    for name, op, value in [("nan", "Mul", float("nan")), ("logits", "Add", 5.0)]:
        proto = onnx.load(str(good))
        for node in proto.graph.node:
            node.output[:] = ["p0" if o == "probabilities" else o for o in node.output]
        proto.graph.initializer.append(helper.make_tensor("k", TensorProto.FLOAT, [], [value]))
        proto.graph.node.append(helper.make_node(op, ["p0", "k"], ["probabilities"]))
        onnx.save(proto, folder / f"{name}.onnx")
        models[name] = folder / f"{name}.onnx"
    return models


@pytest.mark.parametrize("name, problem", [("nan", "non-finite probabilities (NaN or infinity) for 3 of 3 tiles"),
                                           ("logits", "values outside [0, 1]")])
def test_model_outputs_are_checked_at_run_time(onnx_models, name, problem):
    import numpy as np

    from histoeq.infer.onnx_model import OnnxTileModel

    tiles = np.zeros((3, 50, 50, 3), np.uint8)
    assert np.isfinite(OnnxTileModel(onnx_models["good"], "cpu")(tiles)).all()
    with pytest.raises(InputError, match=re.escape(f"{name}.onnx: the model gave {problem}")):
        OnnxTileModel(onnx_models[name], "cpu")(tiles)


def test_output_shape_and_runtime_failures_are_one_line(onnx_models):
    """A graph whose class dimension is only known at run time, and an allocation failure inside ORT."""
    import numpy as np

    from histoeq.infer.onnx_model import OnnxTileModel

    class Session:
        def __init__(self, result):
            self.result = result

        def run(self, names, feeds):
            if isinstance(self.result, Exception):
                raise self.result
            return [self.result]

    model = OnnxTileModel(onnx_models["good"], "cpu")
    model.session = Session(np.full((3, 3), 1 / 3, np.float32))
    with pytest.raises(InputError, match=re.escape("good.onnx: the model gave probabilities of shape [3, 3] for 3 "
                                                   "tiles, expected [3, 2]")):
        model(np.zeros((3, 50, 50, 3), np.uint8))
    model.session = Session(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory\n"
                                         "Stacktrace: ..."))
    with pytest.raises(InputError, match=r"good.onnx: the model failed on a batch of 3 tiles \(\[ONNXRuntimeError\] "
                                         r": 6 : RUNTIME_EXCEPTION : Failed to allocate memory\); a smaller"):
        model(np.zeros((3, 50, 50, 3), np.uint8))


def test_predict_with_a_nan_model_writes_nothing_for_the_slide(onnx_models, tmp_path, capsys):
    import numpy as np
    import tifffile

    from tests.conftest import assert_one_line_error, run_cli

    rgb = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tiff", rgb, photometric="rgb", resolution=(2500, 2500),
                     resolutionunit="CENTIMETER")
    code, _, err = run_cli(["predict", tmp_path / "s.tiff", "--model", onnx_models["nan"], "--out", tmp_path / "out",
                            "--device", "cpu", "--min-tissue", "0"], capsys)
    assert_one_line_error(code, err, "nan.onnx", "non-finite probabilities")
    assert not list((tmp_path / "out").glob("s.*"))


def test_checkpoint_with_foreign_objects_gets_no_torch_advice(tmp_path):
    import datetime

    import torch

    from histoeq.runs.checkpoint import load_checkpoint

    torch.save({"format": "histoeq-checkpoint", "when": datetime.date(2020, 1, 1)}, tmp_path / "odd.pt")
    with pytest.raises(InputError) as info:
        load_checkpoint(tmp_path / "odd.pt")
    message = str(info.value)
    assert "Unsupported global: GLOBAL datetime.date" in message and "loaded without running code" in message
    assert "weights_only" not in message and "\x1b" not in message and "\n" not in message


@pytest.mark.parametrize("point, problem", [
    ({"threshold": 1.5}, "threshold must be a number in (0, 1), got 1.5"),
    ({"threshold": 0}, "threshold must be a number in (0, 1), got 0"),
    ({"threshold": "0.4"}, "threshold must be a number in (0, 1), got '0.4'"),
    ({"threshold": True}, "threshold must be a number in (0, 1), got True"),
    ({"threshold": 0.4, "context": "gauss"}, "unknown context kernel 'gauss' (choose from none, box3, binomial3, "
                                             "binomial5)"),
    ({"threshold": 0.4, "context": ["box3"]}, "unknown context kernel ['box3']"),
    ({"context": "box3"}, "no threshold"),
    ("0.4", "no threshold"),
])
def test_model_with_an_unusable_operating_point_is_a_one_line_error(onnx_models, tmp_path, capsys, point, problem):
    import numpy as np
    import tifffile

    from tests.conftest import assert_one_line_error, run_cli

    bad = hostile.model_with_metadata(onnx_models["good"], tmp_path / "bad.onnx", operating_point=point)
    rgb = np.random.default_rng(0).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tiff", rgb, photometric="rgb", resolution=(2500, 2500), resolutionunit="CENTIMETER")
    code, _, err = run_cli(["predict", tmp_path / "s.tiff", "--model", bad, "--out", tmp_path / "out", "--device",
                            "cpu"], capsys)
    assert_one_line_error(code, err, "bad.onnx: histoeq metadata has an unusable operating point", problem)
    assert not (tmp_path / "out" / "s.json").exists()
