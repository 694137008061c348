"""Per-slide Reinhard stain normalisation: the colour maths, `histoeq normalise`, and that train -> export -> eval /
predict apply the same map (synthetic patches; the real-slide check is in test_predict.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from histoeq.data.dataset import DatasetWriter, PatchDataset
from histoeq.data.stain import (
    METHODS,
    StainTransform,
    check_stain,
    dataset_stain,
    get_method,
    normalise_dataset,
    normalise_groups,
    sample_evenly,
    tissue_pixels,
)
from histoeq.errors import HistoeqError, InputError
from tests.conftest import assert_one_line_error, run_cli

MACENKO = METHODS["macenko"]


def _tissue(rng: np.random.Generator, n: int, tint: tuple[float, float], size: int = 16) -> np.ndarray:
    """Synthetic H&E: per-pixel haematoxylin and eosin amounts mixed with stain vectors, a per-patient change of
    eosin hue and overall intensity (`tint`: eosin angle shift, intensity factor), and a white glass corner."""
    h_vec = np.array([0.65, 0.70, 0.29])
    e_vec = np.array([0.07, 0.99, 0.11]) + np.array([0.0, -tint[0], tint[0]])
    e_vec /= np.linalg.norm(e_vec)
    h = rng.gamma(2.0, 0.35, (n, size, size, 1)) * tint[1]
    e = rng.gamma(3.0, 0.2, (n, size, size, 1)) * tint[1]
    od = h * h_vec + e * e_vec
    img = 256.0 * np.exp(-od) - 1.0
    img[:, :3, :3] = 245  # glass
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _target(method, rng: np.random.Generator) -> dict:
    return method.measure([_tissue(rng, 30, (0.0, 1.0))])


@pytest.mark.parametrize("name", list(METHODS))
def test_method_maps_a_slide_to_the_reference_and_is_identity_on_itself(name: str) -> None:
    method = METHODS[name]
    rng = np.random.default_rng(0)
    images = _tissue(rng, 40, (0.25, 0.7))
    source, target = method.measure([images]), _target(method, rng)
    method.check(source)
    mapped = method.apply(images, source, target)
    measured = method.measure([mapped])
    if name == "reinhard-lab":  # over the pixels that were tissue before (faint ones may cross the threshold)
        lab = method._lab(mapped)[tissue_pixels(images)]
        assert np.allclose(lab.mean(axis=0), target["mean"], atol=1.0), (lab.mean(axis=0), target)
        assert np.allclose(lab.std(axis=0), target["std"], atol=1.0), (lab.std(axis=0), target)
    else:
        assert np.allclose(measured["stain_matrix"], target["stain_matrix"], atol=0.05), (measured, target)
        if method.scale:  # intensities matched; without scaling they stay the slide's own
            assert np.allclose(measured["max_concentration"], target["max_concentration"], rtol=0.08)
        else:
            assert np.allclose(measured["max_concentration"], source["max_concentration"], rtol=0.08)
    same = method.apply(images, source, source)
    tissue = tissue_pixels(images)
    assert np.abs(same.astype(int) - images.astype(int))[tissue].mean() < 1.5  # round trip, rounded to uint8


def test_macenko_finds_haematoxylin_first() -> None:
    stats = MACENKO.measure([_tissue(np.random.default_rng(3), 30, (0.0, 1.0))])
    h, e = np.asarray(stats["stain_matrix"])
    assert np.allclose(h, [0.65, 0.70, 0.29], atol=0.08) and np.allclose(e, [0.07, 0.99, 0.11], atol=0.08)


def test_tissue_mask_and_too_little_tissue() -> None:
    white = np.full((4, 50, 50, 3), 250, dtype=np.uint8)
    assert not tissue_pixels(white).any()
    for method in METHODS.values():
        assert method.measure([white]) is None
    stain = {"method": "macenko", "reference": _target(MACENKO, np.random.default_rng(0))}
    transform = StainTransform.measure(stain, [white])
    assert transform(white) is white and transform.record()["applied"] is False


def test_stain_records_are_validated() -> None:
    good = {"method": "reinhard-lab", "reference": {"mean": [61.0, 25.5, -9.0], "std": [12.0, 9.0, 6.0]}}
    assert check_stain(good) is good
    bad_refs = [("reinhard-lab", {"mean": [1, 2], "std": [1, 1, 1]}), ("reinhard-lab", {"mean": [1, 2, 3],
                "std": [1, 0, 1]}), ("macenko", {"stain_matrix": [[1, 0, 0], [1, 0, 0]], "max_concentration": [1, 1]}),
                ("macenko", {"stain_matrix": [[1, 0, 0]], "max_concentration": [1, 1]}), ("reinhard-lab", {})]
    for method, ref in bad_refs:
        with pytest.raises(HistoeqError, match="stain"):
            check_stain({"method": method, "reference": ref})
    with pytest.raises(HistoeqError, match="unknown stain normalisation 'vahadane'"):
        get_method("vahadane")


def test_sample_evenly_spans_the_range() -> None:
    assert list(sample_evenly(5, 10)) == [0, 1, 2, 3, 4]
    picked = sample_evenly(10_000, 100)
    assert len(picked) == 100 and picked[0] == 0 and picked[-1] == 9_999 and np.all(np.diff(picked) > 0)


def _two_patient_dataset(path: Path, n: int = 48) -> np.ndarray:
    """Patients 'a' (train) and 'b' (val) with the same tissue but different eosin hue and intensity."""
    rng = np.random.default_rng(1)
    a, b = _tissue(rng, n, (0.0, 1.0)), _tissue(rng, n, (0.3, 0.6))
    images = np.concatenate([a, b])
    with DatasetWriter(path, tile_px=16, classes=["neg", "pos"], mpp=4.0) as w:
        w.add(images, [{"label": i % 2, "patient": "a" if i < n else "b", "split": "train" if i < n else "val"}
                       for i in range(2 * n)])
    return images


@pytest.mark.parametrize("name", list(METHODS))
def test_normalise_dataset_removes_the_patient_colour_cast(tmp_path: Path, name: str) -> None:
    _two_patient_dataset(tmp_path / "ds")
    result = normalise_dataset(tmp_path / "ds", tmp_path / "norm", method=name)
    ds, before = PatchDataset.open(tmp_path / "norm"), PatchDataset.open(tmp_path / "ds")
    assert len(ds) == result["n"] == 96 and result["unchanged"] == [] and result["method"] == name
    stain = dataset_stain(ds.meta)
    assert stain is not None and stain["method"] == name and dataset_stain(before.meta) is None
    # the reference is the one training patient's own statistics, so patient a is (almost) unchanged ...
    assert np.abs(np.asarray(ds.images[:48], int) - np.asarray(before.images[:48], int)).mean() < 1.5
    # ... and patient b's stain (hue and, unless only vectors are matched, intensity) moves to patient a's
    key = "mean" if name == "reinhard-lab" else "stain_matrix"
    method = METHODS[name]
    gap = [np.abs(np.subtract(method.measure([np.asarray(d.images[:48])])[key],
                              method.measure([np.asarray(d.images[48:])])[key])).max() for d in (before, ds)]
    assert gap[1] < gap[0] / 4, gap
    with pytest.raises(InputError, match="already exists"):
        normalise_dataset(tmp_path / "ds", tmp_path / "norm")


def test_normalise_groups_also_maps_companions() -> None:
    rng = np.random.default_rng(2)
    images = np.concatenate([_tissue(rng, 10, (0.0, 1.0)), _tissue(rng, 10, (0.3, 0.6))])
    contexts = images.copy()
    groups = np.array(["a"] * 10 + ["b"] * 10)
    stain = {"method": "macenko", "reference": _target(MACENKO, rng)}
    assert normalise_groups(images, groups, stain, (contexts,)) == []
    assert np.array_equal(images, contexts)
    for sel in (slice(0, 10), slice(10, 20)):
        measured = MACENKO.measure([images[sel]])
        assert np.allclose(measured["stain_matrix"], stain["reference"]["stain_matrix"], atol=0.05)


def test_normalise_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["normalise", tmp_path / "missing", "--out", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "missing", "does not exist")
    assert not (tmp_path / "out").exists()


def test_train_export_eval_and_predict_apply_the_same_normalisation(tmp_path: Path, capsys) -> None:
    """A model trained on normalised patches carries the reference into its checkpoint and ONNX file; eval on the
    original patches normalises per patient and scores exactly like eval on the normalised dataset."""
    _two_patient_dataset(tmp_path / "ds")
    normalise_dataset(tmp_path / "ds", tmp_path / "norm", method="macenko")
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", tmp_path / "norm", "--model", "cnn", "--width", "4", "--epochs", "1",
                            "--max-steps", "2", "--batch-size", "16", "--device", "cpu", "--out", run], capsys)
    assert code == 0, err
    onnx = tmp_path / "m.onnx"
    code, _, err = run_cli(["export", run, "--out", onnx], capsys)
    assert code == 0, err
    from histoeq.infer.onnx_model import OnnxTileModel

    stain = OnnxTileModel(onnx, "cpu").metadata.stain
    assert stain == dataset_stain(PatchDataset.open(tmp_path / "norm").meta)
    scores = {}
    for model in (run, onnx):
        for data in ("ds", "norm"):
            out = tmp_path / f"eval-{model.name}-{data}"
            code, _, err = run_cli(["eval", model, "--data", tmp_path / data, "--split", "val", "--rotations", "4",
                                    "--device", "cpu", "--out", out], capsys)
            assert code == 0, err
            record = json.loads((out / "eval.json").read_text())
            assert record["stain"]["method"] == "macenko"
            scores[model.name, data] = record["runs"][0]["summary"]["auc"]["identity"]
    assert scores["run", "ds"] == pytest.approx(scores["run", "norm"], abs=1e-6)
    assert scores["m.onnx", "ds"] == pytest.approx(scores["m.onnx", "norm"], abs=1e-6)


def test_model_metadata_with_a_broken_stain_record_is_refused() -> None:
    from histoeq.export.metadata import ModelMetadata, parse_metadata

    meta = ModelMetadata(model_name="cnn", model_config={}, group={"name": "C1", "order": 1}, classes=["a", "b"],
                         tile_px=50, mpp=4.0, normalisation={"mean": [0.5] * 3, "std": [0.2] * 3},
                         stain={"method": "macenko", "reference": {"stain_matrix": [[1, 0, 0]]}})
    with pytest.raises(InputError, match="m.onnx: histoeq metadata has an unusable stain normalisation"):
        parse_metadata(meta.to_props(), "m.onnx")


def test_normalise_unknown_method_is_one_line(tmp_path: Path, capsys) -> None:
    _two_patient_dataset(tmp_path / "ds")
    code, _, err = run_cli(["normalise", tmp_path / "ds", "--out", tmp_path / "out", "--method", "vahadane"], capsys)
    assert code == 2 and err.startswith("error: unknown stain normalisation 'vahadane'") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
