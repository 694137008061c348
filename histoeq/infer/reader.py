"""Feed the model: read tiles in a thread pool, a bounded number of reads ahead, and hand out full batches.

Per-read overhead dominates at 50 px tiles, so tiles are read as blocks of `block` x `block` tiles (one
`read_region` each, e.g. 8 x 8 = 64 tiles) and cut with numpy. Reads run in worker threads (OpenSlide and the
decoders release the GIL) while the caller runs the model; at most `ahead` blocks are in flight or waiting, so
memory stays flat whatever the slide size, and blocks come back in a fixed order so results are deterministic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from histoeq.infer.grid import TileGrid


@dataclass(frozen=True)
class Block:
    """`rows` x `cols` neighbouring grid tiles starting at grid cell (row0, col0), some of them kept."""

    row0: int
    col0: int
    rows: int
    cols: int
    keep: np.ndarray  # bool (rows, cols)


def plan_blocks(grid: TileGrid, keep: np.ndarray, block: int) -> list[Block]:
    """Blocks covering the grid in reading order (row-major), skipping blocks without a kept tile."""
    blocks = []
    for row0 in range(0, grid.rows, block):
        for col0 in range(0, grid.cols, block):
            sub = keep[row0 : row0 + block, col0 : col0 + block]
            if sub.any():
                blocks.append(Block(row0, col0, sub.shape[0], sub.shape[1], sub.copy()))
    return blocks


def read_block(slide: Any, grid: TileGrid, mpp: float, blk: Block) -> tuple[np.ndarray, np.ndarray]:
    """(flat grid indices, uint8 tiles) of the kept tiles of one block, from one region read."""
    t, s = grid.tile_px, grid.stride_px
    x, y = grid.top_left(np.array([blk.row0]), np.array([blk.col0]))
    size = ((blk.cols - 1) * s + t, (blk.rows - 1) * s + t)
    region = np.asarray(slide.read_region((int(x[0]), int(y[0])), size, mpp))
    rr, cc = np.nonzero(blk.keep)
    tiles = np.empty((len(rr), t, t, 3), dtype=np.uint8)
    for i, (r, c) in enumerate(zip(rr, cc, strict=True)):
        tiles[i] = region[r * s : r * s + t, c * s : c * s + t, :3]
    indices = (blk.row0 + rr) * grid.cols + (blk.col0 + cc)
    return indices.astype(np.int64), tiles


def iter_batches(
    slide: Any,
    grid: TileGrid,
    keep: np.ndarray,
    mpp: float,
    batch_size: int = 256,
    block: int = 8,
    workers: int = 4,
    ahead: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (flat grid indices, uint8 tiles) batches of `batch_size` (the last may be smaller)."""
    blocks = plan_blocks(grid, keep, block)
    ahead = ahead or 2 * workers
    pending_idx: list[np.ndarray] = []
    pending_tiles: list[np.ndarray] = []
    pending = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="histoeq-read") as pool:
        queue: deque[Future] = deque()
        upcoming = iter(blocks)
        try:
            for blk in upcoming:
                queue.append(pool.submit(read_block, slide, grid, mpp, blk))
                if len(queue) >= ahead:
                    break
            while queue:
                idx, tiles = queue.popleft().result()
                nxt = next(upcoming, None)
                if nxt is not None:
                    queue.append(pool.submit(read_block, slide, grid, mpp, nxt))
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
        finally:
            for fut in queue:
                fut.cancel()
