"""Heatmaps: the tile probabilities as a grid array (what the equivariance test compares) and as a PNG overlay.

The PNG is drawn with matplotlib's object API (no pyplot, so no global state and no display is needed): the slide
thumbnail, the positive-class probability on top with a colour bar, tiles without tissue left transparent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from histoeq.infer.grid import TileGrid
from histoeq.infer.outputs import write_atomically


def probability_grid(grid: TileGrid, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(rows, cols) float array: `values` at the predicted tiles' grid cells, NaN elsewhere."""
    out = np.full(grid.rows * grid.cols, np.nan, dtype=np.float32)
    out[indices] = values
    return out.reshape(grid.rows, grid.cols)


def write_heatmap_png(
    path: Path, thumb: np.ndarray, downsample: float, grid: TileGrid, heat: np.ndarray, label: str
) -> None:
    """Overlay `heat` (rows, cols) on the thumbnail; grid cells are placed by their level-0 extent."""
    h, w = thumb.shape[:2]
    dpi = 100
    fig = Figure(figsize=(max(w, 200) / dpi + 1.2, max(h, 200) / dpi + 0.4), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, w / (w + 1.2 * dpi) if w else 1.0, 1.0))
    ax.imshow(thumb, extent=(0, grid.width, grid.height, 0), interpolation="nearest")
    if grid.count:
        left, top = grid.origin_x, grid.origin_y
        # With stride < tile, cells are drawn at stride pitch, centred on the tiles.
        pad = (grid.footprint - grid.step) / 2
        extent = (left + pad, left + pad + grid.cols * grid.step, top + pad + grid.rows * grid.step, top + pad)
        image = ax.imshow(
            np.ma.masked_invalid(heat), extent=extent, cmap="inferno", vmin=0.0, vmax=1.0, alpha=0.55,
            interpolation="nearest",
        )
        cax = fig.add_axes((w / (w + 1.2 * dpi) + 0.02, 0.1, 0.03, 0.8))
        fig.colorbar(image, cax=cax, label=f"p({label})")
    ax.set_xlim(0, grid.width)
    ax.set_ylim(grid.height, 0)
    ax.set_axis_off()
    write_atomically(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi), binary=True)
