"""QuPath round trip: tile features with unique ids, tumour regions of positive tiles with their areas, the
per-slide summary, and reading QuPath 0.4+ classifications (``classification.names``)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import shapely

from histoeq.data.annotations import RegionAnnotations
from histoeq.errors import HistoeqError
from histoeq.infer.outputs import write_tiles_geojson
from histoeq.infer.qupath import CLASS_COLOURS, feature_ids
from histoeq.infer.regions import (
    regions_feature_collection,
    tumour_regions,
    write_regions_geojson,
)
from histoeq.infer.result import SlidePrediction
from histoeq.infer.summary import SlideSummary, summarise_slide, write_summaries_csv
from histoeq.slide.tiler import tile_grid


def _prediction(n: int) -> SlidePrediction:
    grid = tile_grid((50 * n, 50), 1.0, 1.0, 50)
    p = np.linspace(0, 1, n)
    return SlidePrediction(slide=Path("s.svs"), dimensions=(50 * n, 50), slide_mpp=1.0, grid=grid,
                           indices=np.arange(n), probabilities=np.stack([1 - p, p], axis=1), classes=["neg", "pos"],
                           positive_class="pos", thumbnail=np.zeros((1, n, 3), np.uint8), thumbnail_downsample=50.0,
                           model={}, provider="cpu", options={}, outputs=("geojson",))


def test_tile_features_have_unique_uuid_ids(tmp_path) -> None:
    path = tmp_path / "s.geojson"
    write_tiles_geojson(path, _prediction(100))
    features = json.loads(path.read_text())["features"]
    ids = [f["id"] for f in features]
    assert len(ids) == 100 and len(set(ids)) == 100
    assert all(str(uuid.UUID(i)) == i for i in ids)  # QuPath reads object ids as UUIDs
    assert features[-1]["properties"]["classification"]["color"] == CLASS_COLOURS[1]
    base = uuid.UUID(int=7)
    write_tiles_geojson(path, _prediction(100), id_base=base)
    again = [f["id"] for f in json.loads(path.read_text())["features"]]
    assert again == feature_ids(100, base) and again[3] == "00000000-0000-0000-0000-000000000003"


def test_class_colours_avoid_red_against_green() -> None:
    neg, pos = CLASS_COLOURS[:2]
    assert neg == [0, 114, 178] and pos == [230, 159, 0]  # Okabe-Ito blue and orange


def _grid_case():
    """A 10 x 8 grid of 100 px tiles at 0.5 µm/px (50 µm tiles, 0.0025 mm² each); positives: a 3 x 3 block with a
    hole in its middle, a 2 x 1 bar, and a single tile touching the block only at a corner."""
    grid = tile_grid((1000, 800), 0.5, 0.5, 100)
    p = np.zeros((grid.rows, grid.cols))
    p[1:4, 1:4] = 0.9
    p[2, 2] = 0.2  # hole
    p[6, 6:8] = 0.6
    p[4, 4] = 0.7  # corner contact with the block at (3, 3)
    return grid, np.arange(grid.count), p.ravel()


def test_region_areas_on_a_synthetic_grid() -> None:
    grid, indices, p = _grid_case()
    regions = tumour_regions(grid, indices, p, mpp=0.5, threshold=0.5)
    assert [r.tiles for r in regions] == [8, 2, 1]
    assert [r.area_mm2 for r in regions] == pytest.approx([8 * 0.0025, 2 * 0.0025, 0.0025])
    block = regions[0].polygon
    assert len(block.interiors) == 1 and block.bounds == (100.0, 100.0, 400.0, 400.0)
    assert block.area == pytest.approx(8 * 100 * 100)
    assert len(block.exterior.coords) == 5  # collinear cell corners removed
    assert regions[1].mean_p == pytest.approx(0.6) and regions[0].max_p == pytest.approx(0.9)
    assert tumour_regions(grid, indices, p, mpp=0.5, threshold=0.5, min_tiles=2)[-1].tiles == 2
    assert tumour_regions(grid, indices, p * 0, mpp=0.5) == []
    with pytest.raises(HistoeqError, match="threshold"):
        tumour_regions(grid, indices, p, mpp=0.5, threshold=0.0)


def test_regions_with_overlapping_tiles_use_stride_cells() -> None:
    """Stride half a tile: cells are stride-sized squares centred on their tiles, so two positive neighbours
    cover two cells, not the union of two overlapping tiles."""
    grid = tile_grid((300, 300), 1.0, 1.0, 100, stride_px=50)
    p = np.zeros(grid.count)
    p[[0, 1]] = 1.0
    regions = tumour_regions(grid, np.arange(grid.count), p, mpp=1.0)
    assert len(regions) == 1 and regions[0].area_mm2 == pytest.approx(2 * 0.05 ** 2)
    assert regions[0].polygon.bounds == (25.0, 25.0, 125.0, 75.0)


def test_regions_geojson(tmp_path) -> None:
    grid, indices, p = _grid_case()
    regions = tumour_regions(grid, indices, p, mpp=0.5)
    path = tmp_path / "s.regions.geojson"
    write_regions_geojson(path, regions, "IDC", threshold=0.5)
    features = json.loads(path.read_text())["features"]
    assert len({f["id"] for f in features}) == 3
    first = features[0]["properties"]
    assert first["objectType"] == "annotation" and first["classification"]["name"] == "IDC"
    assert first["measurements"]["Area mm^2"] == pytest.approx(0.02) and first["measurements"]["Threshold"] == 0.5
    assert shapely.geometry.shape(features[0]["geometry"]).area == pytest.approx(80000)
    # Read back as annotations: the regions are what histoeq extract would label with.
    back = RegionAnnotations.load(path)
    assert back.classes == ["IDC"] and back.geometries[0].area == pytest.approx(110000)
    assert regions_feature_collection([], "IDC")["features"] == []


def test_slide_summary(tmp_path) -> None:
    grid, _, p = _grid_case()
    mask = np.zeros((80, 100), bool)
    mask[:40, :50] = True  # 2000 mask px at 10 level-0 px each side, 0.5 µm/px: 2000 * 25 µm² = 0.05 mm²
    summary = summarise_slide("s.svs", "m", "IDC", grid, p, mask, 10.0, 0.5, threshold=0.5)
    assert isinstance(summary, SlideSummary)
    assert summary.tiles == 80 and summary.positive_tiles == 11
    assert summary.tissue_area_mm2 == pytest.approx(0.05)
    assert summary.positive_area_mm2 == pytest.approx(11 * 0.0025)
    assert summary.mean_p == pytest.approx(p.mean()) and summary.positive_fraction == pytest.approx(11 / 80)
    path = tmp_path / "summary.csv"
    write_summaries_csv(path, [summary, summary])
    lines = path.read_text().splitlines()
    assert lines[0].split(",")[:5] == ["slide", "model", "positive_class", "threshold", "tiles"] and len(lines) == 3


def _feature(classification: object, square: tuple[int, int, int, int]) -> dict:
    x0, y0, x1, y1 = square
    return {"type": "Feature", "geometry": {"type": "Polygon",
                                            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": {"objectType": "annotation", "classification": classification}}


def test_qupath_04_classification_names(tmp_path) -> None:
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _feature({"names": ["Tumor"], "color": [200, 0, 0]}, (0, 0, 100, 100)),
        _feature({"names": ["Tumor", "Positive"], "color": [200, 0, 0]}, (200, 0, 300, 100)),
        _feature({"name": "Stroma", "color": [0, 200, 0]}, (0, 200, 400, 400)),
        _feature({"names": []}, (500, 500, 600, 600)),
    ]}))
    annotations = RegionAnnotations.load(path)
    assert sorted(annotations.classes) == ["Stroma", "Tumor", "Tumor: Positive"]
    assert annotations.areas["Tumor"] == pytest.approx(10000) and annotations.ignored == {"no class": 1}
