"""Bad numeric options / devices to every `histoeq bench` subcommand: exit 2, one `error:` line, no traceback.

Every case is refused before any model is built or any file is read, so the tests take a few seconds and need no
real data (a synthetic dataset stands in for `bench train`, a missing path for the slides, a tiny export for ONNX).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import assert_one_line_error, export_tiny_onnx, run_cli

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")


@pytest.mark.parametrize(("args", "fragments"), [
    (["--tile-px", "0"], ["--tile-px", "at least 4"]),
    (["--tile-px", "-5"], ["--tile-px", "-5"]),
    (["--tile-px", "4", "--batch-size", "1"], ["--batch-size 1", "--tile-px"]),
    (["--batch-size", "0"], ["--batch-size", "at least 1"]),
    (["--batch-size", "-1"], ["--batch-size"]),
    (["--repeats", "0"], ["--repeats", "at least 1"]),
    (["--repeats", "-3"], ["--repeats"]),
    (["--device", "foo"], ["unknown device 'foo'"]),
    pytest.param(["--device", "cuda"], ["--device cuda", "no CUDA"], marks=NO_CUDA),
])
def test_bench_layers_bad_options(args: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["bench", "layers", *args], capsys)
    assert_one_line_error(code, err, *fragments)
    assert "nan" not in out


@pytest.mark.parametrize(("args", "fragments"), [
    (["--seeds", "0"], ["--seeds", "at least 1"]),
    (["--seeds", "-1"], ["--seeds"]),
    (["--tile-px", "0"], ["--tile-px", "at least 4"]),
    (["--tile-px", "-2"], ["--tile-px"]),
    (["--angle", "nan"], ["--angle", "finite"]),
    (["--angle", "inf"], ["--angle", "finite"]),
    (["--angle", "-inf"], ["--angle", "finite"]),
    (["--orientations", "0"], ["--orientations", "at least 1"]),
    (["--orientations", "-1"], ["--orientations"]),
])
def test_bench_equivariance_bad_options(args: list[str], fragments: list[str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["bench", "equivariance", *args], capsys)
    assert_one_line_error(code, err, *fragments)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 random 50 px patches in the on-disk format `histoeq import` writes."""
    from histoeq.data.dataset import DatasetWriter

    out = tmp_path_factory.mktemp("bench") / "ds"
    rng = np.random.default_rng(0)
    rows = [{"label": i % 2, "patient": f"p{i % 4}", "slide": f"p{i % 4}", "x": i, "y": 0, "mpp": 4.0,
             "split": ("train", "val", "test")[i % 3], "source": f"s{i}"} for i in range(12)]
    with DatasetWriter(out, tile_px=50, classes=["a", "b"], mpp=4.0, provenance={}) as writer:
        writer.add(rng.integers(0, 255, (12, 50, 50, 3), dtype=np.uint8), rows)
    return out


@pytest.mark.parametrize(("args", "fragments"), [
    (["--batch-size", "0"], ["--batch-size", "at least 1"]),
    (["--batch-size", "-1"], ["--batch-size"]),
    (["--width", "0"], ["--width", "at least 1"]),
    (["--width", "-1"], ["--width"]),
    (["--orientations", "16"], ["--orientations", "se2_c16"]),
    (["--fraction", "0"], ["fraction"]),
    (["--fraction", "nan"], ["fraction"]),
    (["--fraction", "2"], ["fraction"]),
    (["--device", "foo"], ["unknown device 'foo'"]),
    pytest.param(["--device", "cuda"], ["--device cuda", "no CUDA"], marks=NO_CUDA),
])
def test_bench_train_bad_options(tiny_dataset: Path, args: list[str], fragments: list[str],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = ["bench", "train", "--data", tiny_dataset, "--models", "cnn", "--width", "4", "--device", "cpu"]
    code, _, err = run_cli([*base, *args], capsys)
    assert_one_line_error(code, err, *fragments)


def test_bench_train_cuda_matches_train(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bench train --device cuda` without CUDA says exactly what `train --device cuda` says."""
    if torch.cuda.is_available():
        pytest.skip("checks the no-CUDA error")
    bench = run_cli(["bench", "train", "--data", tiny_dataset, "--device", "cuda"], capsys)
    train = run_cli(["train", "--data", tiny_dataset, "--model", "cnn", "--out", tmp_path / "run", "--device", "cuda"],
                    capsys)
    assert_one_line_error(*bench[::2], "--device cuda")
    assert_one_line_error(*train[::2], "--device cuda")
    assert bench[2] == train[2]


@pytest.mark.parametrize(("args", "fragments"), [
    (["--patch-size", "0"], ["--patch-size"]),
    (["--stride", "0"], ["--stride"]),
    (["--mpp", "0"], ["--mpp"]),
    (["--mpp", "nan"], ["--mpp"]),
    (["--mpp", "-1"], ["--mpp"]),
    (["--min-tissue", "nan"], ["--min-tissue"]),
    (["--min-tissue", "2"], ["--min-tissue"]),
    (["--workers", "0"], ["--workers"]),
    (["--repeats", "0"], ["--repeats"]),
    (["--repeats", "-1"], ["--repeats"]),
])
def test_bench_extract_bad_options(tmp_path: Path, args: list[str], fragments: list[str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["bench", "extract", tmp_path / "missing.svs", *args], capsys)
    assert_one_line_error(code, err, *fragments)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.mark.parametrize(("args", "fragments"), [
    (["--batch-size", "0"], ["--batch-size"]),
    (["--workers", "0"], ["--workers"]),
    (["--workers", "-1"], ["--workers"]),
    (["--min-tissue", "nan"], ["--min-tissue"]),
    (["--min-tissue", "2"], ["--min-tissue"]),
    (["--device", "foo"], ["--device"]),
])
def test_bench_predict_bad_options(tiny_onnx: Path, tmp_path: Path, args: list[str], fragments: list[str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["bench", "predict", tmp_path / "missing.svs", "--model", tiny_onnx, *args], capsys)
    assert_one_line_error(code, err, *fragments)
