"""Equivariant heatmaps: predicting a losslessly rotated real slide gives the rotated heatmap (p4m, random weights).

A region of a real IDC slide is written as a tiled TIFF (lossless, with resolution tags for 4 µm/px), and so is the
same region turned by 90° with numpy. The region's size is deliberately not a multiple of the tile (leftover 20 px
and 30 px): a grid anchored at the origin would then put the tiles of the rotated slide 20 px off their twins; the
centred grid maps tiles onto tiles, so tile sets and probabilities must match exactly (up to float noise).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from histoeq.export.exporter import export_model
from histoeq.infer import OnnxTileModel, PredictOptions, predict_slides
from histoeq.slide import open_slide
from histoeq.slide.tiler import tile_grid

pytestmark = pytest.mark.realdata
TILE = 50


def _write_tiff(path: Path, rgb: np.ndarray, mpp: float = 4.0) -> None:
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(256, 256), compression="zlib",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")


def _tiles(csv_path: Path, column: str = "prob_1") -> dict[tuple[int, int], float]:
    with open(csv_path, newline="") as fh:
        return {(int(r["minx"]), int(r["miny"])): float(r[column]) for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def p4m_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from histoeq import models

    torch.manual_seed(3)
    model = models.create("p4m", width=8).eval()
    info = {"model_config": model.config, "classes": ["0", "1"], "tile_px": TILE, "mpp": 4.0,
            "normalisation": {"mean": [0.8, 0.6, 0.75], "std": [0.1, 0.15, 0.1]}}
    return export_model(model, info, tmp_path_factory.mktemp("p4m") / "p4m.onnx").path


def test_centred_grid_is_symmetric() -> None:
    grid = tile_grid((1220, 880), 4.0, 4.0, TILE)
    assert (grid.cols, grid.rows) == (24, 17) and (grid.origin_x, grid.origin_y) == (10.0, 15.0)
    turned = tile_grid((880, 1220), 4.0, 4.0, TILE)
    xs = grid.origin_x + np.arange(grid.cols) * grid.step
    # x -> W - x - footprint maps the grid onto itself, so a rotation maps it onto the turned slide's grid.
    assert np.allclose(np.sort(1220 - xs - TILE), turned.origin_y + np.arange(turned.rows) * turned.step)


@pytest.mark.parametrize(("turns", "tissue_threshold", "context"),
                         [(1, 0.0, "none"), (2, 0.25, "none"), (1, 0.0, "binomial5"), (3, 0.0, "box3")])
def test_rotated_slide_gives_rotated_heatmap(
    p4m_onnx: Path, idc_dir: Path, tmp_path: Path, turns: int, tissue_threshold: float, context: str
) -> None:
    """With spatial context the combined probabilities turn with the slide too: the kernels are D4-symmetric and
    sums are exact, so missing neighbours at the border and background are the same under every turn."""
    with open_slide(idc_dir / "slides" / "8918.tiff") as slide:
        region = slide.read_region((700, 600), (1220, 880), 4.0)  # real tissue, lossless from here on
    _write_tiff(tmp_path / "upright.tiff", region)
    turned = np.ascontiguousarray(np.rot90(region, turns))  # counter-clockwise, as numpy turns
    _write_tiff(tmp_path / "turned.tiff", turned)
    model = OnnxTileModel(p4m_onnx, "cpu")
    assert model.metadata.group["name"] == "D4"
    # Threshold 0 keeps every tile: the tile sets must then match exactly. With the default threshold the tissue
    # mask decides too; it is equivariant up to float ties of tiles exactly at the threshold.
    options = PredictOptions(batch_size=64, tissue_threshold=tissue_threshold, context=context)
    predict_slides([tmp_path / "upright.tiff", tmp_path / "turned.tiff"], model, tmp_path / "out", options=options)
    column = "prob_1" if context == "none" else f"prob_1_{context}"
    upright, rotated = _tiles(tmp_path / "out" / "upright.csv", column), _tiles(tmp_path / "out" / "turned.csv", column)
    assert len(upright) > 100
    height, width = region.shape[:2]

    def turn(x: int, y: int) -> tuple[int, int]:  # top-left of a tile after one counter-clockwise turn
        return y, width - x - TILE

    mapped = {}
    for (x, y), p in upright.items():
        nx, ny = turn(x, y)
        if turns >= 2:  # the second turn happens on the already-turned slide (width and height swapped)
            nx, ny = ny, height - nx - TILE
        if turns == 3:  # and the third on the twice-turned one (original width and height)
            nx, ny = ny, width - nx - TILE
        mapped[(nx, ny)] = p
    common = set(mapped) & set(rotated)
    if tissue_threshold == 0:
        assert set(mapped) == set(rotated)
    else:
        assert len(set(mapped) ^ set(rotated)) <= 0.01 * len(common)
    diff = max(abs(mapped[k] - rotated[k]) for k in common)
    assert diff <= 1e-5, diff
    # The probabilities are not all equal, so the comparison is meaningful.
    assert np.std(list(upright.values())) > 1e-4
