"""Bad input to train / eval / sweep / bench train: exit code 2, one line on stderr, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from histoeq.data.dataset import DatasetWriter, PatchDataset
from tests.conftest import run_cli
from tests.test_train_helpers import FAST_TRAIN, small_idc_fixture_path, small_threads

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def small_idc(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    small_threads()
    return small_idc_fixture_path(idc_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def trained_cnn(small_idc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from histoeq.train.config import TrainConfig
    from histoeq.train.trainer import train

    run = tmp_path_factory.mktemp("errors") / "cnn"
    train(TrainConfig(data=small_idc, model="cnn", out=run, width=4, epochs=1, max_steps=1, batch_size=32,
                      device="cpu"))
    return run


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--data", tmp_path / "nope", "--model", "cnn", "--out", tmp_path / "r",
                            *FAST_TRAIN], capsys)
    _one_line_error(code, err, "nope")
    assert not (tmp_path / "r").exists()


def test_dataset_without_train_split(small_idc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = PatchDataset.open(small_idc)
    keep = src.index[src.index["split"] != "train"]
    with DatasetWriter(tmp_path / "notrain", tile_px=50, classes=src.classes, mpp=4.0) as writer:
        writer.add(np.asarray(src.images[keep["id"].to_numpy()]), keep.drop(columns="id").to_dict("records"))
    code, _, err = run_cli(["train", "--data", tmp_path / "notrain", "--model", "cnn", "--out", tmp_path / "r",
                            *FAST_TRAIN], capsys)
    _one_line_error(code, err, "train")
    assert not (tmp_path / "r").exists()


def test_unknown_model(small_idc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "resnet9000", "--out", tmp_path / "r",
                            *FAST_TRAIN], capsys)
    _one_line_error(code, err, "resnet9000")
    assert not (tmp_path / "r").exists()
    code, _, err = run_cli(["sweep", "--data", small_idc, "--models", "cnn,resnet9000", "--out", tmp_path / "s"],
                           capsys)
    _one_line_error(code, err, "resnet9000")


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.2"])
def test_fraction_outside_unit_interval(small_idc: Path, tmp_path: Path, fraction: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "cnn", "--out", tmp_path / "r",
                            "--fraction", fraction, *FAST_TRAIN], capsys)
    _one_line_error(code, err, "fraction")
    code, _, err = run_cli(["sweep", "--data", small_idc, "--fractions", f"1,{fraction}", "--out", tmp_path / "s"],
                           capsys)
    _one_line_error(code, err, "fraction")
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_checkpoint_from_another_model(trained_cnn: Path, small_idc: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    payload = torch.load(trained_cnn / "best.pt", weights_only=True)
    payload["model_config"] = {**payload["model_config"], "name": "p4m"}
    torch.save(payload, tmp_path / "mislabelled.pt")
    code, _, err = run_cli(["eval", tmp_path / "mislabelled.pt", "--data", small_idc, "--out", tmp_path / "e"],
                           capsys)
    _one_line_error(code, err, "mislabelled.pt", "do not fit")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", None])
def test_corrupted_checkpoint(trained_cnn: Path, small_idc: Path, tmp_path: Path, content: bytes | None,
                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "run"
    bad.mkdir()
    data = (trained_cnn / "best.pt").read_bytes()
    (bad / "best.pt").write_bytes(data[: len(data) // 2] if content is None else content)
    code, _, err = run_cli(["eval", bad, "--data", small_idc, "--out", tmp_path / "e"], capsys)
    _one_line_error(code, err, "best.pt")
    assert not (tmp_path / "e").exists()


def test_eval_missing_run_and_bad_options(trained_cnn: Path, small_idc: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["eval", tmp_path / "missing", "--data", small_idc, "--out", tmp_path / "e"], capsys)
    _one_line_error(code, err, "missing")
    code, _, err = run_cli(["eval", trained_cnn, "--data", small_idc, "--out", tmp_path / "e", "--invariant-to", "d8",
                            "--device", "cpu"], capsys)
    _one_line_error(code, err, "--invariant-to")
    code, _, err = run_cli(["eval", trained_cnn, "--data", small_idc, "--out", tmp_path / "e", "--split", "holdout",
                            "--device", "cpu"], capsys)
    _one_line_error(code, err, "holdout")
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "cnn", "--out", tmp_path / "r",
                            "--augment", "spin", *FAST_TRAIN], capsys)
    _one_line_error(code, err, "spin")
    code, _, err = run_cli(["bench", "train", "--data", small_idc, "--models", "nope", "--device", "cpu"], capsys)
    _one_line_error(code, err, "nope")


def test_out_is_a_file(small_idc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r").write_text("not a folder")
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "cnn", "--out", tmp_path / "r", *FAST_TRAIN],
                           capsys)
    _one_line_error(code, err, str(tmp_path / "r"), "not a directory")


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--seed", "-1", "--seed must be between 0"), ("--seed", str(2**64), "--seed must be between 0"),
    ("--weight-decay", "-1", "--weight-decay must be a number >= 0"), ("--weight-decay", "nan", "--weight-decay"),
    ("--workers", "-1", "--workers must be at least 0"), ("--width", "0", "--width must be at least 1"),
    ("--augment", "rot90+", "unknown augmentation '' in 'rot90+'"),
])
def test_bad_train_options_fail_before_anything_is_written(small_idc: Path, tmp_path: Path, option: str, value: str,
                                                           needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "cnn", "--out", tmp_path / "r", *FAST_TRAIN,
                            option, value], capsys)
    _one_line_error(code, err, needle)
    assert not (tmp_path / "r").exists()


def test_diverged_training_is_one_line_not_a_metrics_traceback(small_idc: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "cnn", "--out", tmp_path / "r", *FAST_TRAIN,
                            "--lr", "1e30"], capsys)
    _one_line_error(code, err, str(tmp_path / "r"), "training diverged", "--lr")
    assert not (tmp_path / "r" / "best.pt").exists()


def test_eval_of_a_checkpoint_with_nan_weights_names_it(trained_cnn: Path, small_idc: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    payload = torch.load(trained_cnn / "best.pt", weights_only=False)
    name = next(k for k, v in payload["state_dict"].items() if v.dtype.is_floating_point)
    payload["state_dict"][name].fill_(float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    code, _, err = run_cli(["eval", tmp_path / "nan.pt", "--data", small_idc, "--split", "val", "--rotations", "1",
                            "--out", tmp_path / "e", "--device", "cpu"], capsys)
    _one_line_error(code, err, "nan.pt", "non-finite probabilities")
    assert not (tmp_path / "e" / "eval.json").exists()


@pytest.mark.parametrize("damage", ["empty images.npy", "zero std"])
def test_damaged_dataset_files_are_named(small_idc: Path, tmp_path: Path, damage: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import shutil

    data = tmp_path / "ds"
    shutil.copytree(small_idc, data)
    if damage == "empty images.npy":
        (data / "images.npy").write_bytes(b"")
        needle = "images.npy"
    else:
        meta = json.loads((data / "meta.json").read_text())
        meta["normalisation"]["std"] = [0, 0, 0]
        (data / "meta.json").write_text(json.dumps(meta))
        needle = "normalisation.std must be positive"
    code, _, err = run_cli(["train", "--data", data, "--model", "cnn", "--out", tmp_path / "r", *FAST_TRAIN], capsys)
    _one_line_error(code, err, needle)
    assert not (tmp_path / "r").exists()


def test_training_patches_of_one_class_are_refused(small_idc: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src = PatchDataset.open(small_idc)
    keep = src.index[(src.index["split"] != "train") | (src.index["label"] == 0)]
    with DatasetWriter(tmp_path / "oneclass", tile_px=50, classes=src.classes, mpp=4.0) as writer:
        writer.add(np.asarray(src.images[keep["id"].to_numpy()]), keep.drop(columns="id").to_dict("records"))
    code, _, err = run_cli(["train", "--data", tmp_path / "oneclass", "--model", "cnn", "--out", tmp_path / "r",
                            *FAST_TRAIN], capsys)
    _one_line_error(code, err, "oneclass", f"one class only ({src.classes[0]})")
    assert not (tmp_path / "r").exists()
