"""Slide resolution and tissue: a --slide-mpp far from the file's own is said, not silent; the tissue mask does not
depend on whether the slide has a pyramid; a grey slide is named as grey by predict as by extract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import assert_one_line_error, export_tiny_onnx, run_cli


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


def textured_tissue(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Pale, noisy H&E-like tissue on glass: blobs whose saturation lies near the Otsu threshold, with pixel noise,
    so any extra blur of the mask image moves tiles across the tissue-fraction threshold."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    coarse = cv2.GaussianBlur(rng.uniform(0, 1, (h // 64 + 1, w // 64 + 1)), (0, 0), 1.5)
    coarse = np.clip(1.6 * (coarse - coarse.min()) / np.ptp(coarse) - 0.5, 0, 1)
    stain = cv2.resize((coarse * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image = rng.integers(-20, 21, (h, w, 3), dtype=np.int16)  # pixel noise
    for channel, depth in enumerate((5, 90, 40)):  # glass (240 grey) to pink (235, 150, 200)
        image[..., channel] += 240 - stain * depth // 255
    return np.clip(image, 0, 255).astype(np.uint8)


def test_tissue_tiles_are_the_same_with_and_without_a_pyramid(tiny_model, tmp_path, capsys):
    """The same level-0 pixels, once flat and once with area-averaged pyramid levels (as scanners and vips build
    them), at the same µm/px: the same tiles are kept. The mask used to come from a thumbnail of arbitrary size,
    resampled from the level after level 0 had been resampled to it: a second blur that moved the Otsu threshold."""
    import cv2

    image = textured_tissue((1701, 2351))
    h, w = image.shape[:2]
    res = {"resolution": (1e4 / 4.0, 1e4 / 4.0), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(tmp_path / "flat.tiff", image, photometric="rgb", **res)
    with tifffile.TiffWriter(tmp_path / "pyramid.tiff") as tif:
        tif.write(image, subifds=2, tile=(256, 256), photometric="rgb", **res)
        for k in (2, 4):
            level = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
            tif.write(level, subfiletype=1, tile=(256, 256), photometric="rgb")
    kept = {}
    for name in ("flat", "pyramid"):
        code, _, err = run_cli(["predict", tmp_path / f"{name}.tiff", "--model", tiny_model, "--out",
                                tmp_path / name, "--device", "cpu", "--outputs", "csv"], capsys)
        assert code == 0, err
        table = np.loadtxt(tmp_path / name / f"{name}.csv", delimiter=",", skiprows=1, usecols=(0, 1), ndmin=2)
        kept[name] = {tuple(row) for row in table.astype(int)}
    assert 100 < len(kept["flat"]) < 0.9 * 47 * 34  # some tiles on tissue, some on glass
    assert kept["pyramid"] == kept["flat"]


def test_predict_names_a_grey_slide_as_grey(tiny_model, tmp_path, capsys):
    """Tissue is found by stain colour: predict must say why a greyscale scan has no tissue, as extract does."""
    grey = np.full((400, 600), 245, np.uint8)
    grey[100:300, 100:500] = 120  # a tissue-like dark block, without colour
    tifffile.imwrite(tmp_path / "grey.tiff", np.repeat(grey[:, :, None], 3, axis=2), photometric="rgb",
                     resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    code, out, err = run_cli(["predict", tmp_path / "grey.tiff", "--model", tiny_model, "--out", tmp_path / "out",
                              "--device", "cpu", "--outputs", "csv"], capsys)
    assert code == 0, err
    said = [line for line in out.splitlines() if "grey.tiff" in line and "greyscale" in line]
    assert len(said) == 1, out
    assert "greyscale" in json.loads((tmp_path / "out" / "grey.json").read_text())["no_tissue"]


def test_extract_parses_an_annotation_file_once(tmp_path, capsys, monkeypatch):
    """A big polygon costs minutes and GBs to parse: class order, up-front check and extraction share one parse."""
    from histoeq.data import annotations

    slide = pink_slide(tmp_path / "s3.tiff", mpp=4.0)
    square = [[[150, 100], [650, 100], [650, 500], [150, 500], [150, 100]]]
    (tmp_path / "s3.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square},
         "properties": {"classification": {"name": "Tumour"}}}]}))
    reads = []
    real = annotations._load_features
    monkeypatch.setattr(annotations, "_load_features", lambda path: reads.append(path) or real(path))
    code, _, err = run_cli(["extract", slide, "--annotations", tmp_path / "s3.geojson", "--out", tmp_path / "ds",
                            "--patch-size", 50, "--mpp", 4.0, "--min-tissue", 0], capsys)
    assert code == 0, err
    assert len(reads) == 1, reads


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError("In draw_path: Exceeded cell block limit")])
def test_heatmap_failure_is_one_line_and_leaves_no_output(tiny_model, tmp_path, capsys, monkeypatch, failure):
    """Out of memory (or a matplotlib failure) while drawing the heatmap: one line naming the heatmap file, exit 2,
    and none of that slide's outputs (CSV, JSON record, temporaries) left behind."""
    from histoeq.infer import outputs

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(outputs, "write_heatmap_png", fail)
    slide = pink_slide(tmp_path / "s4.tiff", mpp=1.0)
    out = tmp_path / "out"
    code, _, err = run_cli(["predict", slide, "--model", tiny_model, "--out", out, "--device", "cpu",
                            "--outputs", "csv,heatmap"], capsys)
    assert_one_line_error(code, err, str(out / "s4.heatmap.png"), "cannot draw the heatmap")
    assert not [p.name for p in out.iterdir() if p.name.startswith(("s4", ".s4"))]


def test_an_over_dense_polygon_is_simplified_below_a_pixel_before_it_is_repaired(tmp_path):
    """GEOS's validity repair grows faster than the vertex count; a ring sampled far below a pixel is thinned first
    (1M such vertices: 5 s instead of 20 s on a loaded 2-core machine), and no tile label moves."""
    import shapely

    from histoeq.data.annotations import SIMPLIFY_ABOVE_VERTICES, RegionAnnotations, parse_annotations

    n = 4 * SIMPLIFY_ABOVE_VERTICES
    angle = 2 * np.pi * np.arange(n) / n
    ring = np.stack([2000 + 1500 * np.cos(angle) + 0.1 * np.sin(np.arange(n) * 0.37),
                     2000 + 1500 * np.sin(angle)], axis=1)
    ring = np.vstack([ring, ring[:1]])
    path = tmp_path / "dense.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"classification": {"name": "Tumor"}},
        "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]}}]}))
    parsed = parse_annotations(path)
    assert shapely.get_num_coordinates(parsed.merged["Tumor"]) < n / 10
    exact = shapely.Polygon(ring)
    xs, ys = (v.ravel() for v in np.meshgrid(np.arange(0.0, 4000, 50), np.arange(0.0, 4000, 50)))
    labels = RegionAnnotations.of(parsed).label_tiles(xs, ys, 50.0, "centre")
    assert (labels == np.where(shapely.contains_xy(exact, xs + 25, ys + 25), 0, -1)).all()
    assert abs(parsed.merged["Tumor"].area / exact.area - 1) < 1e-4  # a quarter pixel along the outline at most
