"""Where tiles go on a slide: a grid centred on the slide, so that rotating the slide rotates the tile grid.

A grid anchored at the level-0 origin is not rotation-equivariant: after a 90° turn the old right edge becomes the
top edge, and the leftover strip (slide size modulo the tile step) moves from the right/bottom to the top/left, so
every tile lands a fraction of a tile off its rotated twin. Centring the grid puts half the leftover on each side:
the tile set is then symmetric under x -> W - x - footprint (and likewise in y), hence under all eight 90°
rotations and mirrors of the slide, and a p4m model gives the rotated heatmap exactly. With integer level-0
positions this is exact when the leftover (W - span) is even; when it is odd the grid is off by one level-0 pixel
after a rotation (documented, harmless at 50 px tiles).

Positions and sizes are in level-0 pixels; `tile_px`/`stride_px` are in model pixels (at the model's µm/px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histoeq.errors import InputError

MAX_TILES = 100_000_000  # a 100k x 100k px slide at 10 px per tile; beyond this the index arrays alone need GiBs


@dataclass(frozen=True)
class TileGrid:
    """A centred grid of `rows` x `cols` square tiles on a slide of `width` x `height` level-0 px."""

    width: int
    height: int
    origin_x: float
    origin_y: float
    step: float  # level-0 px between neighbouring tiles
    footprint: float  # level-0 px covered by one tile's side
    cols: int
    rows: int
    tile_px: int
    stride_px: int

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def top_left(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer level-0 top-left corners of tiles (row, col)."""
        x = np.floor(self.origin_x + col * self.step + 0.5).astype(np.int64)
        y = np.floor(self.origin_y + row * self.step + 0.5).astype(np.int64)
        return x, y


def _axis(length: int, footprint: float, step: float) -> tuple[int, float]:
    if length + 1e-9 < footprint:
        return 0, 0.0
    count = math.floor((length - footprint) / step + 1e-9) + 1
    span = footprint + (count - 1) * step
    return count, (length - span) / 2.0


def tile_grid(
    dimensions: tuple[int, int], slide_mpp: float, model_mpp: float, tile_px: int, stride_px: int | None = None,
    source: str | Path | None = None,
) -> TileGrid:
    """The centred grid of model tiles (``tile_px`` at ``model_mpp``) on a slide of level-0 `dimensions`.

    A tile smaller than one level-0 pixel, or a grid of more than `MAX_TILES` tiles, comes from a wrong µm/px
    (``--mpp`` or the model's) and would exhaust memory, so it is an `InputError` naming `source` (the slide); so is
    a slide smaller than one tile, which would give no tiles at all."""
    stride_px = tile_px if stride_px is None else stride_px
    if stride_px <= 0 or tile_px <= 0:
        raise ValueError("tile size and stride must be positive")
    scale = model_mpp / slide_mpp
    footprint, step = tile_px * scale, stride_px * scale
    width, height = int(dimensions[0]), int(dimensions[1])
    if not (math.isfinite(footprint) and math.isfinite(step)) or footprint < 1:
        raise InputError(source, f"a {tile_px} px tile at {model_mpp:g} µm/px covers {footprint:.3g} px of this "
                                 f"{slide_mpp:g} µm/px slide, under one pixel (is the µm/px right?)")
    cols, ox = _axis(width, footprint, step)
    rows, oy = _axis(height, footprint, step)
    if rows == 0 or cols == 0:  # no tile fits: the outputs would be empty, silently
        raise InputError(source, f"slide is {width} x {height} px at {slide_mpp:g} µm/px, too small for one {tile_px} "
                                 f"px tile at {model_mpp:g} µm/px ({footprint:.4g} px square; is the µm/px right?)")
    if rows * cols > MAX_TILES:
        raise InputError(source, f"{rows * cols:,} tiles of {footprint:.3g} px at {slide_mpp:g} µm/px, more than "
                                 f"{MAX_TILES:,} (is the µm/px right?)")
    # Integer origins when the leftover is even; see the module docstring for the odd case.
    return TileGrid(width, height, ox, oy, step, footprint, cols, rows, tile_px, stride_px)


def tile_rects(grid: TileGrid) -> np.ndarray:
    """Level-0 (x, y, w, h) of every grid cell, row-major (real-valued: for tissue-fraction lookup)."""
    rows, cols = np.divmod(np.arange(grid.count), max(grid.cols, 1))
    x = grid.origin_x + cols * grid.step
    y = grid.origin_y + rows * grid.step
    size = np.full(grid.count, grid.footprint)
    return np.column_stack([x, y, size, size])
