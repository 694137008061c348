"""`histoeq import`: IDC split counts, synthetic layouts (labels.csv, class folders, PCam), odd sizes, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from histoeq.data.dataset import PatchDataset
from tests.conftest import run_cli

# README of ../shared/data/idc: patches per split and class (non-IDC, IDC)
IDC_README = {"train": (15922, 4627), "val": (1768, 534), "test": (4251, 1273)}


@pytest.mark.realdata
@pytest.mark.slow
def test_import_idc_split_counts(idc_dir, tmp_path, capsys):
    out = tmp_path / "idc"
    start = time.perf_counter()
    code, stdout, err = run_cli(["import", idc_dir, "--out", out], capsys)
    seconds = time.perf_counter() - start
    assert code == 0, err
    assert seconds < 60, f"import took {seconds:.0f} s"
    assert "skipped: size not 50x50" in stdout
    ds = PatchDataset.open(out)
    assert ds.classes == ["non-IDC", "IDC"] and ds.tile_px == 50 and ds.mpp == 4.0
    skipped = pd.read_csv(out / "skipped.csv")
    labels = pd.read_csv(idc_dir / "labels.csv").set_index("path")
    skipped = skipped.join(labels, on="source")
    assert (skipped["reason"] == "size not 50x50").all() and len(skipped) == ds.meta["skipped"]["size not 50x50"]
    for split, (neg, pos) in IDC_README.items():
        got = ds.index[ds.index["split"] == split]["label"].value_counts()
        lost = skipped[skipped["split"] == split]["label_idc"].value_counts()
        assert got.get(0, 0) + lost.get(0, 0) == neg and got.get(1, 0) + lost.get(1, 0) == pos, split
    assert 0 < len(skipped) < 0.02 * 28375  # "about 1 %" edge crops
    # every skipped file really is not 50x50
    for source in skipped["source"].head(20):
        assert cv2.imread(str(idc_dir / source)).shape[:2] != (50, 50)
    # patients never in two splits; normalisation from the train split, in [0, 1] units
    assert (ds.index.groupby("patient")["split"].nunique() == 1).all()
    mean = np.asarray(ds.normalisation["mean"])
    assert ((0.4 < mean) & (mean < 0.95)).all() and ds.meta["normalisation"]["computed_on"] == "train"
    # pixels are the PNGs'
    row = ds.index.iloc[1234]
    png = cv2.imread(str(idc_dir / row["source"]))[:, :, ::-1]
    assert np.array_equal(ds.images[1234], png)


def _png(path: Path, size: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


def test_import_labels_csv_with_odd_sizes(tmp_path, capsys):
    root = tmp_path / "patches"
    rows = []
    for i in range(12):
        size = (8, 8) if i != 5 else (8, 1)  # one edge crop
        rel = f"p{i % 3}/img{i}_x{i * 8}_y0.png"
        _png(root / rel, size, 10 * i)
        rows.append({"path": rel, "label": "tumour" if i % 2 else "normal", "patient": f"p{i % 3}",
                     "split": ["train", "valid", "test"][i % 3]})
    rows.append({"path": "p0/missing.png", "label": "normal", "patient": "p0", "split": "train"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    out = tmp_path / "ds"
    code, stdout, err = run_cli(["import", root, "--out", out], capsys)
    assert code == 0, err
    ds = PatchDataset.open(out)
    assert len(ds) == 11 and ds.classes == ["normal", "tumour"] and ds.mpp is None
    assert ds.meta["skipped"] == {"size not 8x8": 1, "missing file": 1}
    assert set(ds.index["split"]) == {"train", "val", "test"}  # "valid" -> "val"
    assert ds.index.loc[0, "x"] == 0 and ds.index.loc[1, "x"] == 8
    assert "size not 8x8: 1" in stdout
    # --pad keeps the edge crop, white on the right
    out2 = tmp_path / "ds-pad"
    assert run_cli(["import", root, "--out", out2, "--pad", "--mpp", 0.5], capsys)[0] == 0
    padded = PatchDataset.open(out2)
    assert padded.mpp == 0.5 and (padded.index["mpp"] == 0.5).all()
    assert len(padded) == 12 and padded.meta["provenance"]["padded"] == 1
    crop = padded.images[padded.index.index[padded.index["source"] == "p2/img5_x40_y0.png"][0]]
    assert (crop[:, 0] == 50).all() and (crop[:, 1:] == 255).all()


def test_import_folder_layouts(tmp_path, capsys):
    kaggle = tmp_path / "kaggle"  # <patient>/<class>/*.png
    image_folder = tmp_path / "imagefolder"  # <class>/*.png
    for p in ("10253", "10254", "10255"):
        for c in ("0", "1"):
            for k in range(2):
                _png(kaggle / p / c / f"{p}_idx5_x{k * 50}_y0_class{c}.png", (6, 6), 40 * int(c))
    for c in ("benign", "malignant"):
        for k in range(3):
            _png(image_folder / c / f"case{k}_{c}.png", (6, 6), 7)
    out = tmp_path / "k"
    assert run_cli(["import", kaggle, "--out", out], capsys)[0] == 0
    ds = PatchDataset.open(out)
    assert ds.classes == ["0", "1"] and len(ds) == 12 and set(ds.index["patient"]) == {"10253", "10254", "10255"}
    assert (ds.images[ds.labels == 1] == 40).all() and set(ds.index["x"]) == {0, 50}
    out = tmp_path / "i"
    assert run_cli(["import", image_folder, "--out", out], capsys)[0] == 0
    ds = PatchDataset.open(out)
    assert ds.classes == ["benign", "malignant"] and len(ds) == 6
    assert set(ds.index["patient"]) == {"case0", "case1", "case2"} and ds.meta["splits"] == {"none": 6}


def test_import_pcam(tmp_path, capsys):
    h5py = pytest.importorskip("h5py", reason="PCam import needs the optional h5py (pip install 'histoeq[pcam]')")
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("valid", 4), ("test", 3)):
        with h5py.File(tmp_path / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f["x"] = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        with h5py.File(tmp_path / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f["y"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
    out = tmp_path / "pcam"
    code, _, err = run_cli(["import", tmp_path, "--out", out], capsys)
    assert code == 0, err
    ds = PatchDataset.open(out)
    assert ds.tile_px == 96 and len(ds) == 17 and ds.meta["splits"] == {"train": 10, "val": 4, "test": 3}
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_x.h5") as f:
        assert np.array_equal(ds.images[ds.split_ids("val")], f["x"][:])


@pytest.mark.parametrize("case", ["missing", "empty-folder", "bad-csv", "csv-is-a-folder"])
def test_import_bad_inputs(tmp_path, capsys, case):
    folder = tmp_path / "in"
    if case != "missing":
        folder.mkdir()
    if case == "bad-csv":
        (folder / "labels.csv").write_text("file_name,klass\na.png,1\n")
    if case == "csv-is-a-folder":
        _png(folder / "labels.csv" / "a.png", (6, 6), 10)
        _png(folder / "patches" / "b.png", (6, 6), 20)
    culprit = folder / "labels.csv" if case in ("bad-csv", "csv-is-a-folder") else folder
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    code, _, err = run_cli(["import", folder, "--out", outputs / "ds"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {culprit}: "), err
    assert list(outputs.iterdir()) == []


def _labels_csv(root: Path, labels: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(len(labels)):
        _png(root / f"p{i}" / f"img{i}.png", (6, 6), 20 * i)
    lines = ["path,label,patient"] + [f"p{i}/img{i}.png,{lab},p{i}" for i, lab in enumerate(labels)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


@pytest.mark.parametrize("labels, message", [
    (["0", "1", "99999999999"], "label 99999999999 on line 4 would make 100000000000 classes"),
    ([], "no rows"),
    (["1", "", "0"], "empty label on line 3"),
    (["1", "-1", "0"], "label -1 on line 3 is negative"),
])
def test_import_rejects_bad_labels(tmp_path, capsys, labels, message):
    csv = _labels_csv(tmp_path / "in", labels)
    code, _, err = run_cli(["import", tmp_path / "in", "--out", tmp_path / "ds"], capsys)
    assert code == 2 and err.startswith(f"error: {csv}: {message}"), err
    assert len(err.splitlines()) == 1 and not (tmp_path / "ds").exists()


@pytest.mark.parametrize("labels, line", [(["0", "1", "maybe"], 4), (["1", "1.5", "0"], 3)])
def test_import_rejects_labels_mixing_indices_and_names(tmp_path, capsys, labels, line):
    csv = _labels_csv(tmp_path / "in", labels)
    code, _, err = run_cli(["import", tmp_path / "in", "--out", tmp_path / "ds"], capsys)
    assert code == 2 and err.startswith(f"error: {csv}: labels mix class indices and names"), err
    assert f"on line {line}" in err and not (tmp_path / "ds").exists()


@pytest.mark.parametrize("case", ["same patch twice", "patient in two splits"])
def test_import_rejects_tables_that_leak_between_splits(tmp_path, capsys, case):
    root = tmp_path / "in"
    for i in range(4):
        _png(root / f"img{i}.png", (6, 6), 20 * i)
    rows = ["img0.png,0,A,train", "img1.png,1,A,train", "img2.png,0,B,test", "img3.png,1,B,test"]
    if case == "same patch twice":
        rows.append("img1.png,0,A,train")
        message = "img1.png is listed twice (lines 3 and 6)"
    else:
        rows[1] = "img1.png,1,A,test"
        message = "patient A is in more than one split (test, train)"
    (root / "labels.csv").write_text("\n".join(["path,label,patient,split", *rows]) + "\n")
    code, _, err = run_cli(["import", root, "--out", tmp_path / "ds"], capsys)
    assert code == 2 and err.startswith(f"error: {root / 'labels.csv'}: {message}"), err
    assert len(err.splitlines()) == 1 and not (tmp_path / "ds").exists()


def test_import_integer_labels_are_class_indices(tmp_path, capsys):
    _labels_csv(tmp_path / "in", ["2", "0", "02", "1"])
    assert run_cli(["import", tmp_path / "in", "--out", tmp_path / "ds"], capsys)[0] == 0
    ds = PatchDataset.open(tmp_path / "ds")
    assert ds.classes == ["0", "1", "2"] and list(ds.labels) == [2, 0, 2, 1]


@pytest.mark.parametrize("option", [["--mpp", "inf"], ["--mpp", "nan"], ["--workers", "-1"]])
def test_import_rejects_bad_options(tmp_path, capsys, option):
    _labels_csv(tmp_path / "in", ["0", "1"])
    code, _, err = run_cli(["import", tmp_path / "in", "--out", tmp_path / "ds", *option], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {option[0]} must be"), err
    assert not (tmp_path / "ds").exists()


def test_import_missing_files_are_skipped_quietly(tmp_path, capfd):
    csv = _labels_csv(tmp_path / "in", ["0", "1", "1"])
    csv.write_text(csv.read_text() + "nope/a.png,0,p9\nnope/b.png,1,p9\n")
    code, stdout, err = run_cli(["import", tmp_path / "in", "--out", tmp_path / "ds"], capfd)
    assert code == 0 and "WARN" not in err and "findDecoder" not in err, err
    assert PatchDataset.open(tmp_path / "ds").meta["skipped"] == {"missing file": 2}


def test_import_malformed_images_are_skipped_quietly(tmp_path, capfd):
    """A file with a PNG signature and garbage after it makes OpenCV log from C++; the skip is counted instead."""
    for k, cls in enumerate(("neg", "pos")):
        for i in range(2):
            _png(tmp_path / "in" / cls / f"p{i}_{k}.png", (6, 6), 40 * i + 100 * k)
    (tmp_path / "in" / "pos" / "p9_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 40)
    code, _, err = run_cli(["import", tmp_path / "in", "--out", tmp_path / "ds"], capfd)
    assert code == 0 and "WARN" not in err and "ERROR" not in err, err
    assert sum(PatchDataset.open(tmp_path / "ds").meta["skipped"].values()) == 1
