"""Slide resolution and tissue: a --slide-mpp far from the file's own is said, not silent; the tissue mask does not
depend on whether the slide has a pyramid; a grey slide is named as grey by predict as by extract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import export_tiny_onnx, run_cli


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx")


def pink_slide(path: Path, mpp: float | None, size: tuple[int, int] = (600, 800)) -> Path:
    """A white slide with a pink (stained) block in the middle, its µm/px in the TIFF resolution tags (or none)."""
    image = np.full((*size, 3), 245, np.uint8)
    h, w = size
    image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (200, 120, 170)
    extra = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, image, photometric="rgb", **extra)
    return path


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_predict_slide_mpp_far_from_the_files_is_warned_and_both_are_recorded(tiny_model, tmp_path, capsys):
    slide = pink_slide(tmp_path / "s1.tiff", mpp=1.0)
    code, _, err = run_cli(["predict", slide, "--model", tiny_model, "--out", tmp_path / "out", "--device", "cpu",
                            "--outputs", "csv", "--slide-mpp", "2.5"], capsys)
    assert code == 0, err
    warned = _warnings(err)
    assert len(warned) == 1 and "Traceback" not in err, err
    assert "s1.tiff" in warned[0] and "2.5" in warned[0] and "1 µm/px" in warned[0], warned[0]
    record = json.loads((tmp_path / "out" / "s1.json").read_text())
    assert record["slide_mpp"] == 2.5 and record["slide_mpp_in_file"] == 1.0


def test_predict_slide_mpp_near_the_files_or_without_one_is_quiet(tiny_model, tmp_path, capsys):
    near = pink_slide(tmp_path / "near.tiff", mpp=1.0)
    bare = pink_slide(tmp_path / "bare.tiff", mpp=None)
    code, _, err = run_cli(["predict", near, bare, "--model", tiny_model, "--out", tmp_path / "out", "--device",
                            "cpu", "--outputs", "csv", "--slide-mpp", "1.2"], capsys)
    assert code == 0 and not _warnings(err), err
    assert json.loads((tmp_path / "out" / "near.json").read_text())["slide_mpp_in_file"] == 1.0
    assert json.loads((tmp_path / "out" / "bare.json").read_text())["slide_mpp_in_file"] is None


def test_extract_slide_mpp_far_from_the_files_is_warned(tmp_path, capsys):
    slide = pink_slide(tmp_path / "s2.tiff", mpp=4.0)
    code, _, err = run_cli(["extract", slide, "--out", tmp_path / "ds", "--patch-size", 50, "--mpp", 1.0,
                            "--slide-mpp", "0.5"], capsys)
    assert code == 0, err
    warned = _warnings(err)
    assert len(warned) == 1 and "s2.tiff" in warned[0] and "0.5" in warned[0] and "4 µm/px" in warned[0], err
