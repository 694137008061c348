"""Whole-slide prediction end to end: a real IDC slide scored against its tile labels, CMU-1 via the CLI, outputs,
re-runs and shards."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from histoeq.export.exporter import export_model
from histoeq.infer.predict import shard_slides
from tests.conftest import run_cli

pytestmark = pytest.mark.realdata  # every test here reads ../shared/data (skips when absent)
NORM = {"mean": [0.8, 0.6, 0.75], "std": [0.1, 0.15, 0.1]}


@pytest.fixture(scope="module")
def colour_model(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly-trained model, exported: logistic regression on mean tile colour, fitted on 1/10 of the train
    split (a second on 2 cores), written as avgpool -> linear so it runs through the same export path."""
    with open(idc_dir / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"][::10]
    feats, labels = [], []
    for r in rows:
        arr = np.asarray(Image.open(idc_dir / r["path"]).convert("RGB"))
        if arr.shape[:2] == (50, 50):
            feats.append(((arr / 255.0 - NORM["mean"]) / NORM["std"]).mean(axis=(0, 1)))
            labels.append(int(r["label_idc"]))
    fit = LogisticRegression(class_weight="balanced").fit(np.array(feats), np.array(labels))
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2)).eval()
    with torch.no_grad():
        coef, bias = torch.tensor(fit.coef_[0] / 2), float(fit.intercept_[0]) / 2
        model[2].weight.copy_(torch.stack([-coef, coef]))
        model[2].bias.copy_(torch.tensor([-bias, bias]))
    info = {"model_config": {"name": "colour-lr"}, "classes": ["non-idc", "idc"], "tile_px": 50, "mpp": 4.0,
            "normalisation": NORM}
    return export_model(model, info, tmp_path_factory.mktemp("model") / "colour.onnx").path


def test_idc_slide_tile_auc(colour_model: Path, idc_dir: Path, tmp_path: Path, capsys) -> None:
    slide = idc_dir / "slides" / "9124.tiff"
    code, out, err = run_cli(["predict", slide, "--model", colour_model, "--out", tmp_path, "--device", "cpu"], capsys)
    assert code == 0, err
    assert "execution provider: CPUExecutionProvider" in out
    with open(tmp_path / "9124.csv", newline="") as fh:
        pred = {(int(r["minx"]), int(r["miny"])): float(r["prob_idc"]) for r in csv.DictReader(fh)}
    with open(slide.with_suffix(".tiles.csv"), newline="") as fh:
        truth = {(int(r["x"]), int(r["y"])): int(r["label_idc"]) for r in csv.DictReader(fh)}
    # The centred grid lands exactly on the patch grid of these slides (patches start at x, y = 1 mod 50).
    common = sorted(set(pred) & set(truth))
    assert len(common) >= 0.8 * len(pred) and len(common) >= 0.75 * len(truth)
    auc = roc_auc_score([truth[k] for k in common], [pred[k] for k in common])
    assert 0.75 <= auc <= 1.0, auc  # measured 0.84 with this colour model (random weights give ~0.5)


def test_cmu_svs_end_to_end_and_rerun(colour_model: Path, cmu_svs: Path, tmp_path: Path, capsys) -> None:
    args = ["predict", cmu_svs, "--model", colour_model, "--out", tmp_path, "--device", "cpu", "--batch-size", "7"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    stem = cmu_svs.stem
    record = json.loads((tmp_path / f"{stem}.json").read_text())
    assert record["provider"] == "CPUExecutionProvider" and record["tile_count"] > 0
    assert record["slide_mpp"] == pytest.approx(0.499) and record["model"]["mpp"] == 4.0
    footprint = round(50 * 4.0 / 0.499)  # 50 px at 4 µm/px on a 0.499 µm/px slide
    with open(tmp_path / f"{stem}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["minx", "miny", "width", "height", "prob_non-idc", "prob_idc"]
    assert len(rows) == record["tile_count"] and {int(r["width"]) for r in rows} == {footprint}
    assert all(abs(float(r["prob_non-idc"]) + float(r["prob_idc"]) - 1) < 1e-5 for r in rows)
    geo = json.loads((tmp_path / f"{stem}.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(rows)
    feature = geo["features"][0]
    assert feature["geometry"]["type"] == "Polygon" and feature["properties"]["objectType"] == "tile"
    assert feature["properties"]["classification"]["name"] in ("non-idc", "idc")
    png = Image.open(tmp_path / f"{stem}.heatmap.png")
    assert png.size[0] > 200 and png.size[1] > 200
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert hidden == [".histoeq-predict.json"]  # the folder's model and options; no temporary files left
    mtime = (tmp_path / f"{stem}.csv").stat().st_mtime_ns
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "skipped" in out and (tmp_path / f"{stem}.csv").stat().st_mtime_ns == mtime


def test_shards_partition_the_slides() -> None:
    slides = [Path(f"s{i}.svs") for i in range(7)]
    parts = [shard_slides(slides, f"{i}/3") for i in range(3)]
    assert sorted(p for part in parts for p in part) == sorted(slides)
    assert all(len(part) in (2, 3) for part in parts)


def test_default_model_missing_is_a_clear_error(cmu_svs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HISTOEQ_MODEL_DIR", raising=False)
    import histoeq.infer.model_index as index_mod

    monkeypatch.setattr(index_mod, "__file__", str(tmp_path / "a" / "b" / "model_index.py"))
    code, out, err = run_cli(["predict", cmu_svs, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "no model given and no models/index.json found" in err and "--model" in err
    assert not (tmp_path / "o").exists()


def test_stain_normalised_model_normalises_each_slide(colour_model: Path, idc_dir: Path, tmp_path: Path,
                                                      capsys) -> None:
    """A model whose metadata asks for Macenko normalisation: predict measures the slide's stains from its tiles,
    records them, and feeds the model exactly the normalised tiles (checked against the plain colour model run on
    tiles normalised by hand with the recorded statistics)."""
    import onnx

    from histoeq.data.stain import METHODS, StainTransform
    from histoeq.infer.onnx_model import OnnxTileModel
    from histoeq.slide import open_slide

    with open(idc_dir / "labels.csv", newline="") as fh:
        train = [r for r in csv.DictReader(fh) if r["split"] == "train"][::40]
    patches = np.stack([a for a in (np.asarray(Image.open(idc_dir / r["path"]).convert("RGB")) for r in train)
                        if a.shape[:2] == (50, 50)])
    stain = {"method": "macenko", "per": "slide", "reference": METHODS["macenko"].measure([patches])}
    proto = onnx.load(colour_model)
    doc = json.loads(next(p.value for p in proto.metadata_props if p.key == "histoeq"))
    for prop in proto.metadata_props:
        if prop.key == "histoeq":
            prop.value = json.dumps({**doc, "stain": stain})
    stained = tmp_path / "stained.onnx"
    onnx.save(proto, stained)

    slide = idc_dir / "slides" / "8918.tiff"
    code, _, err = run_cli(["predict", slide, "--model", stained, "--out", tmp_path / "out", "--device", "cpu"],
                           capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "out" / "8918.json").read_text())
    assert record["stain"]["method"] == "macenko" and record["stain"]["applied"] is True
    assert record["stain"]["reference"] == stain["reference"]
    with open(tmp_path / "out" / "8918.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[::97]
    transform = StainTransform(stain, record["stain"]["slide"])
    with open_slide(slide) as reader:
        tiles = np.stack([np.asarray(reader.read_region((int(r["minx"]), int(r["miny"])), (50, 50), 4.0))[..., :3]
                          for r in rows])
    expected = OnnxTileModel(colour_model, "cpu")(transform(tiles))[:, 1]
    plain = OnnxTileModel(colour_model, "cpu")(tiles)[:, 1]
    got = np.array([float(r["prob_idc"]) for r in rows])
    assert np.allclose(got, expected, atol=1e-5)
    assert np.abs(got - plain).max() > 1e-3  # the normalisation did change what the model saw
