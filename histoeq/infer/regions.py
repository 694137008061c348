"""Tumour regions: the positive tiles of a slide merged into polygons, for QuPath, each with its area in mm².

A tile is positive when its positive-class probability reaches the threshold. The union is taken in grid units
(tile (row, col) is the unit square at (col, row)), where neighbouring cells share their edges exactly, and only then
mapped to level-0 pixels: unioning level-0 boxes with rounded corners would leave slivers between them. Each
connected polygon (holes kept) is one region; tiles touching only at a corner are separate regions, as in QuPath.
Cells are what the heatmap draws: stride-sized squares centred on their tiles when tiles overlap, the tile itself
otherwise, so the regions' areas add up to the positive tiles' share of the slide.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import shapely
from shapely import affinity

from histoeq.atomic import write_atomically
from histoeq.errors import HistoeqError
from histoeq.infer.qupath import class_colour, feature_ids
from histoeq.slide.tiler import TileGrid


@dataclass(frozen=True)
class TumourRegion:
    """One connected region of positive tiles; `polygon` in level-0 pixels."""

    polygon: shapely.Polygon
    area_mm2: float
    tiles: int
    mean_p: float
    max_p: float


def cell_geometry(grid: TileGrid) -> tuple[float, float, float]:
    """(side of a cell in grid units, level-0 x and y of grid point (0, 0)) of the cells the heatmap draws."""
    side = min(1.0, grid.footprint / grid.step) if grid.step > 0 else 1.0
    pad = max(0.0, (grid.footprint - grid.step) / 2)
    return side, grid.origin_x + pad, grid.origin_y + pad


def cell_area_mm2(grid: TileGrid, mpp: float) -> float:
    """Level-0 area of one cell in mm² at `mpp` µm/px."""
    side, _, _ = cell_geometry(grid)
    return (side * grid.step * mpp / 1000.0) ** 2


def tumour_regions(grid: TileGrid, indices: np.ndarray, p: np.ndarray, mpp: float, threshold: float = 0.5,
                   min_tiles: int = 1) -> list[TumourRegion]:
    """Regions of tiles (flat grid `indices`, positive-class probabilities `p`) with p >= `threshold`, largest
    first; regions of fewer than `min_tiles` tiles are dropped."""
    if not 0.0 < threshold <= 1.0:
        raise HistoeqError(f"region threshold must be in (0, 1], got {threshold}")
    if mpp <= 0:
        raise HistoeqError(f"µm/px must be positive, got {mpp}")
    indices, p = np.asarray(indices, dtype=np.int64), np.asarray(p, dtype=np.float64)
    positive = p >= threshold
    if not positive.any():
        return []
    rows, cols = np.divmod(indices[positive], grid.cols)
    side, x0, y0 = cell_geometry(grid)
    cells = shapely.box(cols, rows, cols + side, rows + side)
    union = shapely.coverage_union_all(cells) if side == 1.0 else shapely.union_all(cells)
    polygons = [poly.simplify(0.0) for poly in shapely.get_parts(union)]  # drops the points between cell edges
    centres = shapely.points(cols + side / 2, rows + side / 2)
    hit_point, hit_poly = shapely.STRtree(polygons).query(centres, predicate="within")
    probs = p[positive]
    regions = []
    for k, poly in enumerate(polygons):
        inside = probs[hit_point[hit_poly == k]]
        if len(inside) < max(1, min_tiles):
            continue
        level0 = affinity.affine_transform(poly, [grid.step, 0.0, 0.0, grid.step, x0, y0])
        regions.append(TumourRegion(polygon=level0, area_mm2=float(poly.area * (grid.step * mpp / 1000.0) ** 2),
                                    tiles=len(inside), mean_p=float(inside.mean()), max_p=float(inside.max())))
    return sorted(regions, key=lambda r: (-r.area_mm2, r.polygon.bounds))


def regions_feature_collection(regions: Sequence[TumourRegion], label: str, colour: Sequence[int] | None = None,
                               threshold: float | None = None, id_base: uuid.UUID | None = None) -> dict:
    """QuPath annotations (GeoJSON dict) of `regions`, classified as `label`, with area, tiles and p as
    measurements; coordinates in level-0 pixels, rounded to 0.01 px."""
    colour = list(colour) if colour is not None else class_colour(1)
    features = []
    for k, (region, fid) in enumerate(zip(regions, feature_ids(len(regions), id_base)), start=1):
        geometry = shapely.geometry.mapping(shapely.set_precision(region.polygon, 0.01))
        measurements = {"Area mm^2": round(region.area_mm2, 6), "Tiles": region.tiles,
                        f"Mean p({label})": round(region.mean_p, 6), f"Max p({label})": round(region.max_p, 6)}
        if threshold is not None:
            measurements["Threshold"] = threshold
        features.append({"type": "Feature", "id": fid, "geometry": geometry,
                         "properties": {"objectType": "annotation", "name": f"{label} region {k}",
                                        "classification": {"name": label, "color": colour},
                                        "measurements": measurements}})
    return {"type": "FeatureCollection", "features": features}


def write_regions_geojson(path: Path, regions: Sequence[TumourRegion], label: str,
                          colour: Sequence[int] | None = None, threshold: float | None = None,
                          id_base: uuid.UUID | None = None) -> None:
    """Write `regions_feature_collection` to `path` atomically (drag it onto the slide in QuPath)."""
    collection = regions_feature_collection(regions, label, colour, threshold, id_base)

    def write(fh: IO[str]) -> None:
        json.dump(collection, fh)
        fh.write("\n")

    write_atomically(path, write)
