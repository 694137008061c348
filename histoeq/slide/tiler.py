"""Where tiles go on a slide and how their pixels are read: the one grid and block reader of `extract` and `predict`.

The grid is centred on the slide by default. A grid anchored at the level-0 origin is not rotation-equivariant:
after a 90° turn the old right edge becomes the top edge, and the leftover strip (slide size modulo the tile step)
moves from the right/bottom to the top/left, so every tile lands a fraction of a tile off its rotated twin. Centring
the grid puts half the leftover on each side: the tile set is then symmetric under x -> W - x - footprint (and
likewise in y), hence under all eight 90° rotations and mirrors of the slide, and a p4m model gives the rotated
heatmap exactly. With integer level-0 positions this is exact when the leftover (W - span) is even; when it is odd
the grid is off by one level-0 pixel after a rotation (harmless at 50 px tiles).

An explicit `origin` anchors the grid's first tile at that level-0 point instead, for reproducing patches cut on a
known grid (the IDC patches start at (1, 1)). Such a grid places every tile whose top-left corner lies on the slide,
as those patch sets were cut; tiles sticking out over the edge are padded white by the reader.

Pixels are read per block of `block` x `block` neighbouring grid tiles: one region read (and at most one
resampling) per block, cut into tiles with numpy, because per-read overhead dominates at 50 px tiles. Reads run in
a thread pool (OpenSlide and the decoders release the GIL) with a bounded number of blocks in flight, so memory
stays flat whatever the slide size, and blocks come back in a fixed order, so results are deterministic.

Positions and sizes are in level-0 pixels; `tile_px`/`stride_px` are in output pixels (at the output µm/px).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from histoeq.errors import InputError
from histoeq.slide.reader import Slide

MAX_TILES = 100_000_000  # a 100k x 100k px slide at 10 px per tile; beyond this the index arrays alone need GiBs
BLOCK = 8  # grid tiles per block side: one region read serves up to 64 tiles

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TileGrid:
    """`rows` x `cols` square tiles on a slide of `width` x `height` level-0 px, the first at (origin_x, origin_y)."""

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
    downsample: float  # level-0 px per output px
    centred: bool = True

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def top_left(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer level-0 top-left corners of tiles (row, col): where their pixels are read from."""
        x = np.floor(self.origin_x + col * self.step + 0.5).astype(np.int64)
        y = np.floor(self.origin_y + row * self.step + 0.5).astype(np.int64)
        return x, y

    def top_left_of(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`top_left` of flat (row-major) grid indices."""
        rows, cols = np.divmod(np.asarray(indices, dtype=np.int64), max(self.cols, 1))
        return self.top_left(rows, cols)

    def rects(self) -> np.ndarray:
        """Level-0 (x, y, w, h) of every grid cell, row-major; real-valued, for tissue and label lookups."""
        rows, cols = np.divmod(np.arange(self.count), max(self.cols, 1))
        x = self.origin_x + cols * self.step
        y = self.origin_y + rows * self.step
        size = np.full(self.count, self.footprint)
        return np.column_stack([x, y, size, size])


def _centred_axis(length: int, footprint: float, step: float) -> tuple[int, float]:
    if length + 1e-9 < footprint:
        return 0, 0.0
    count = math.floor((length - footprint) / step + 1e-9) + 1
    span = footprint + (count - 1) * step
    return count, (length - span) / 2.0


def _anchored_axis(length: int, origin: float, step: float) -> tuple[int, float]:
    return max(0, math.ceil((length - origin) / step)), float(origin)


def tile_grid(
    dimensions: tuple[int, int], slide_mpp: float, mpp: float, tile_px: int, stride_px: int | None = None,
    source: str | Path | None = None, origin: tuple[float, float] | None = None, allow_empty: bool = False,
) -> TileGrid:
    """The grid of `tile_px` tiles at `mpp` µm/px, every `stride_px` (default: side by side), on a slide of
    level-0 `dimensions` at `slide_mpp`; centred unless `origin` (level-0 x, y of the first tile) is given.

    A tile smaller than one level-0 pixel, or a grid of more than `MAX_TILES` tiles, comes from a wrong µm/px and
    would exhaust memory, so it is an `InputError` naming `source` (the slide); so is a slide that no tile fits on,
    which would give no tiles at all, unless `allow_empty` (the caller then reports the empty slide itself)."""
    stride_px = tile_px if stride_px is None else stride_px
    if stride_px <= 0 or tile_px <= 0:
        raise ValueError("tile size and stride must be positive")
    scale = mpp / slide_mpp
    footprint, step = tile_px * scale, stride_px * scale
    width, height = int(dimensions[0]), int(dimensions[1])
    if not (math.isfinite(footprint) and math.isfinite(step)) or footprint < 1:
        raise InputError(source, f"a {tile_px} px tile at {mpp:g} µm/px covers {footprint:.3g} px of this "
                                 f"{slide_mpp:g} µm/px slide, under one pixel (is the µm/px right?)")
    if origin is None:
        cols, ox = _centred_axis(width, footprint, step)
        rows, oy = _centred_axis(height, footprint, step)
    else:
        cols, ox = _anchored_axis(width, origin[0], step)
        rows, oy = _anchored_axis(height, origin[1], step)
    if (rows == 0 or cols == 0) and not allow_empty:  # no tile fits: the outputs would be empty, silently
        raise InputError(source, f"slide is {width} x {height} px at {slide_mpp:g} µm/px, too small for one {tile_px} "
                                 f"px tile at {mpp:g} µm/px ({footprint:.4g} px square; is the µm/px right?)")
    if rows * cols > MAX_TILES:
        raise InputError(source, f"{rows * cols:,} tiles of {footprint:.3g} px at {slide_mpp:g} µm/px, more than "
                                 f"{MAX_TILES:,} (is the µm/px right?)")
    return TileGrid(width, height, ox, oy, step, footprint, cols, rows, tile_px, stride_px, scale, origin is None)


@dataclass(frozen=True)
class Block:
    """`rows` x `cols` neighbouring grid tiles starting at grid cell (row0, col0), some of them kept."""

    row0: int
    col0: int
    rows: int
    cols: int
    keep: np.ndarray  # bool (rows, cols)


def plan_blocks(grid: TileGrid, keep: np.ndarray, block: int = BLOCK) -> list[Block]:
    """Blocks covering the grid in reading order (row-major), skipping blocks without a kept tile."""
    blocks = []
    for row0 in range(0, grid.rows, block):
        for col0 in range(0, grid.cols, block):
            sub = keep[row0 : row0 + block, col0 : col0 + block]
            if sub.any():
                blocks.append(Block(row0, col0, sub.shape[0], sub.shape[1], sub.copy()))
    return blocks


def read_block(slide: Slide, grid: TileGrid, blk: Block) -> tuple[np.ndarray, np.ndarray]:
    """(flat grid indices, uint8 tiles) of the kept tiles of one block, row-major, from one region read."""
    t, s = grid.tile_px, grid.stride_px
    x, y = grid.top_left(np.array([blk.row0]), np.array([blk.col0]))
    size = ((blk.cols - 1) * s + t, (blk.rows - 1) * s + t)
    region = np.asarray(slide.read_region_at((int(x[0]), int(y[0])), size, grid.downsample))
    rr, cc = np.nonzero(blk.keep)
    tiles = np.empty((len(rr), t, t, 3), dtype=np.uint8)
    for i, (r, c) in enumerate(zip(rr, cc, strict=True)):
        tiles[i] = region[r * s : r * s + t, c * s : c * s + t, :3]
    indices = (blk.row0 + rr) * grid.cols + (blk.col0 + cc)
    return indices.astype(np.int64), tiles


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int | None = None) -> Iterator[R]:
    """`fn` over `items` in a thread pool, yielding results in input order with at most `ahead` in flight."""
    ahead = ahead or 2 * workers
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="histoeq-read") as pool:
        queue: deque[Future] = deque()
        upcoming = iter(items)
        try:
            for item in upcoming:
                queue.append(pool.submit(fn, item))
                if len(queue) >= ahead:
                    break
            while queue:
                result = queue.popleft().result()
                nxt = next(upcoming, None)
                if nxt is not None:
                    queue.append(pool.submit(fn, nxt))
                yield result
        finally:
            for fut in queue:
                fut.cancel()


def iter_blocks(
    slide: Slide, grid: TileGrid, keep: np.ndarray, block: int = BLOCK, workers: int = 4, ahead: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (flat grid indices, uint8 tiles) block by block, in reading order, of the tiles where `keep`."""
    blocks = plan_blocks(grid, keep, block)
    return ordered_map(lambda blk: read_block(slide, grid, blk), blocks, workers, ahead)


def iter_batches(
    slide: Slide,
    grid: TileGrid,
    keep: np.ndarray,
    batch_size: int = 256,
    block: int = BLOCK,
    workers: int = 4,
    ahead: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`iter_blocks` regrouped into batches of `batch_size` tiles (the last may be smaller)."""
    pending_idx: list[np.ndarray] = []
    pending_tiles: list[np.ndarray] = []
    pending = 0
    for idx, tiles in iter_blocks(slide, grid, keep, block, workers, ahead):
        pending_idx.append(idx)
        pending_tiles.append(tiles)
        pending += len(idx)
        while pending >= batch_size:
            all_idx, all_tiles = np.concatenate(pending_idx), np.concatenate(pending_tiles)
            yield all_idx[:batch_size], all_tiles[:batch_size]
            pending_idx, pending_tiles = [all_idx[batch_size:]], [all_tiles[batch_size:]]
            pending -= batch_size
    if pending:
        yield np.concatenate(pending_idx), np.concatenate(pending_tiles)
