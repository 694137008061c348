"""Dataset format, fractions and transforms on small synthetic data (fast)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from histoeq.data.dataset import DatasetWriter, PatchDataset
from histoeq.data.fractions import FractionError, fraction_hash, patient_splits, select_fraction
from histoeq.data.transforms import build_transform
from histoeq.errors import HistoeqError, InputError
from tests.conftest import run_cli


def _index(n_patients: int = 12, per_patient: int = 100, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for _ in range(per_patient):
            rows.append({"patient": f"p{p}", "label": int(rng.random() < 0.25)})
    df = pd.DataFrame(rows)
    df.insert(0, "id", np.arange(len(df)))
    df["split"] = patient_splits(df, val=0.15, test=0.15, seed=seed).to_numpy()
    return df


def test_writer_roundtrip_and_normalisation(tmp_path):
    out = tmp_path / "ds"
    imgs = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    rows = [{"label": i % 2, "patient": f"p{i // 4}", "split": "train" if i < 6 else "val"} for i in range(10)]
    with DatasetWriter(out, tile_px=8, classes=["neg", "pos"], mpp=4.0) as w:
        w.add(imgs[:4], rows[:4])
        w.add(imgs[4:], rows[4:])
        w.skip("edge crop", 3)
    ds = PatchDataset.open(out)
    assert len(ds) == 10 and ds.tile_px == 8 and ds.classes == ["neg", "pos"] and ds.mpp == 4.0
    assert np.array_equal(np.asarray(ds.images), imgs)
    assert list(ds.split_ids("val")) == [6, 7, 8, 9]
    train = imgs[:6].reshape(-1, 3) / 255.0
    assert np.allclose(ds.normalisation["mean"], train.mean(0), atol=1e-5)
    assert np.allclose(ds.normalisation["std"], train.std(0), atol=1e-5)
    assert ds.meta["skipped"] == {"edge crop": 3} and ds.meta["splits"] == {"train": 6, "val": 4}
    with pytest.raises(InputError, match="split 'test' is empty"):
        ds.split_ids("test")
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp left behind


def test_writer_failure_leaves_nothing(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(out, tile_px=4, classes=["a"]) as w:
            w.add(np.zeros((1, 4, 4, 3), np.uint8), [{"label": 0}])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no patches"):
        with DatasetWriter(out, tile_px=4, classes=["a"]):
            pass
    assert list(tmp_path.iterdir()) == []


def test_open_rejects_broken(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        PatchDataset.open(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="meta.json missing"):
        PatchDataset.open(tmp_path / "d")
    for name in ("meta.json", "index.csv", "images.npy"):
        (tmp_path / "d" / name).write_text("garbage")
    with pytest.raises(InputError, match="meta.json"):
        PatchDataset.open(tmp_path / "d")
    (tmp_path / "d" / "meta.json").write_text(json.dumps({"format": "histoeq-dataset", "version": 1}))
    with pytest.raises(InputError, match="tile_px must be a positive integer"):
        PatchDataset.open(tmp_path / "d")
    (tmp_path / "d" / "meta.json").write_text(json.dumps(
        {"format": "histoeq-dataset", "version": 1, "tile_px": 8, "classes": ["a"],
         "normalisation": {"mean": [0.5] * 3, "std": [0.2] * 3}}))
    with pytest.raises(InputError, match="images.npy"):
        PatchDataset.open(tmp_path / "d")


def test_fractions_nested_stratified_deterministic():
    df = _index()
    train = df[df["split"] == "train"]
    full_rate = train["label"].mean()
    previous: set[int] = set()
    for f in (0.1, 0.25, 0.5, 1.0):
        ids = select_fraction(df, f, seed=7)
        assert previous <= set(ids.tolist())
        previous = set(ids.tolist())
        assert abs(df.loc[ids, "label"].mean() - full_rate) < 0.01
        assert abs(len(ids) - f * len(train)) <= 2
        assert np.array_equal(ids, select_fraction(df, f, seed=7))
        assert fraction_hash(ids) == fraction_hash(select_fraction(df, f, seed=7)[::-1])
    assert len(previous) == len(train)
    assert not np.array_equal(select_fraction(df, 0.1, seed=1), select_fraction(df, 0.1, seed=2))
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(FractionError):
            select_fraction(df, bad, seed=0)
    assert issubclass(FractionError, HistoeqError) and issubclass(FractionError, ValueError)


def test_patient_splits_never_share_patients():
    df = _index(n_patients=20)
    per_patient = df.groupby("patient")["split"].nunique()
    assert (per_patient == 1).all()
    assert set(df["split"]) == {"train", "val", "test"}
    with pytest.raises(FractionError):
        patient_splits(df[df["patient"].isin(["p0", "p1"])])


@pytest.mark.parametrize("preset", ["none", "flip", "rot90", "rotate", "stain", "rot90+stain"])
def test_transform_presets(preset):
    x = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    t = build_transform(preset, seed=3)
    y = t(x)
    assert y.dtype == np.uint8 and y.shape == x.shape
    assert np.array_equal(y, build_transform(preset, seed=3)(x))


def test_rot90_is_d4():
    x = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    t = build_transform("rot90", seed=0)
    d4 = [np.rot90(x, k) for k in range(4)] + [np.rot90(x[:, ::-1], k) for k in range(4)]
    seen = set()
    for _ in range(80):
        y = t(x)
        seen.add(next(i for i, g in enumerate(d4) if np.array_equal(y, g)))
    assert seen == set(range(8))


def test_unknown_preset():
    with pytest.raises(HistoeqError, match="unknown augmentation preset"):
        build_transform("rot90+blur")


@pytest.mark.realdata
def test_fractions_on_idc_labels(idc_dir):
    """On the real IDC index: nested, stratified within 1 point, deterministic; splits are per patient."""
    table = pd.read_csv(idc_dir / "labels.csv", dtype={"patient_id": str})
    index = pd.DataFrame({"id": np.arange(len(table)), "label": table["label_idc"], "patient": table["patient_id"],
                          "split": table["split"]})
    assert (index.groupby("patient")["split"].nunique() == 1).all()
    train = index[index["split"] == "train"]
    rate = train["label"].mean()
    chosen = [select_fraction(index, f, seed=0) for f in (0.1, 0.25, 0.5, 1.0)]
    for small, big in zip(chosen, chosen[1:]):
        assert np.isin(small, big).all()
    for f, ids in zip((0.1, 0.25, 0.5, 1.0), chosen):
        assert abs(index.loc[ids, "label"].mean() - rate) < 0.01
        assert set(index.loc[ids, "split"]) == {"train"}
        assert abs(len(ids) - f * len(train)) <= 2
    assert fraction_hash(chosen[0]) == fraction_hash(select_fraction(index, 0.1, seed=0))
    assert fraction_hash(chosen[0]) != fraction_hash(select_fraction(index, 0.1, seed=1))
    # a fresh patient-level split of the same data never puts a patient in two splits
    fresh = index.assign(split=patient_splits(index, seed=3).to_numpy())
    assert (fresh.groupby("patient")["split"].nunique() == 1).all() and set(fresh["split"]) == {"train", "val", "test"}


def _small_dataset(path, n: int = 6) -> None:
    imgs = np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    with DatasetWriter(path, tile_px=8, classes=["neg", "pos"]) as w:
        w.add(imgs, [{"label": i % 2, "patient": f"p{i}", "split": "train"} for i in range(n)])


def _edit_index(path, col: str, row: int, value) -> None:
    index = pd.read_csv(path / "index.csv", dtype=str, keep_default_na=False)
    index.loc[row, col] = str(value)
    index.to_csv(path / "index.csv", index=False)


def _edit_meta(path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case, file, message", [
    ("label_text", "index.csv", "label 'abc' on line 4 is not an integer"),
    ("label_high", "index.csv", "label 7 on line 2 is not a class index"),
    ("label_negative", "index.csv", "label -1 on line 2 is not a class index"),
    ("id_out_of_range", "index.csv", "id 9999 on line 3 is not its row position"),
    ("tile_text", "meta.json", "tile_px must be a positive integer, got 'fifty'"),
    ("no_classes", "meta.json", "classes must be a non-empty list"),
    ("no_normalisation", "meta.json", "normalisation.mean must be 3 numbers"),
    ("tile_mismatch", "images.npy", r"expected uint8 N x 8 x 8 x 3 .* got uint8 \(6, 12, 12, 3\)"),
])
def test_open_rejects_inconsistent(tmp_path, capsys, case, file, message):
    ds = tmp_path / "ds"
    _small_dataset(ds)
    if case == "label_text":
        _edit_index(ds, "label", 2, "abc")
    elif case == "label_high":
        _edit_index(ds, "label", 0, 7)
    elif case == "label_negative":
        _edit_index(ds, "label", 0, -1)
    elif case == "id_out_of_range":
        _edit_index(ds, "id", 1, 9999)
    elif case == "tile_text":
        _edit_meta(ds, tile_px="fifty")
    elif case == "no_classes":
        _edit_meta(ds, classes=None)
    elif case == "no_normalisation":
        _edit_meta(ds, normalisation=None)
    elif case == "tile_mismatch":
        np.save(ds / "images.npy", np.zeros((6, 12, 12, 3), np.uint8))
    with pytest.raises(InputError, match=message) as info:
        PatchDataset.open(ds)
    assert info.value.path == str(ds / file)
    code, _, err = run_cli(["train", "--data", ds, "--out", tmp_path / "run", "--model", "cnn", "--epochs", "1"],
                           capsys)
    assert code == 2 and err.count("\n") == 1 and f"{ds / file}:" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_open_returns_integer_columns(tmp_path):
    _small_dataset(tmp_path / "ds")
    ds = PatchDataset.open(tmp_path / "ds")
    assert ds.index["label"].dtype == np.int64 and ds.index["id"].dtype == np.int64
