"""Heatmaps: the tile probabilities as a grid array (what the equivariance test compares) and as a PNG overlay.

The PNG is drawn with matplotlib's object API (no pyplot, so no global state and no display is needed): the slide
thumbnail with the positive-class probability blended in and a colour bar; tiles without tissue show the bare slide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from histoeq.atomic import atomic_open
from histoeq.slide.tiler import TileGrid


def probability_grid(grid: TileGrid, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(rows, cols) float array: `values` at the predicted tiles' grid cells, NaN elsewhere."""
    out = np.full(grid.rows * grid.cols, np.nan, dtype=np.float32)
    out[indices] = values
    return out.reshape(grid.rows, grid.cols)


def heat_on_thumbnail(grid: TileGrid, heat: np.ndarray, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """`heat` resampled (nearest cell) onto the thumbnail's pixels: (h, w) float, NaN off the predicted tiles."""
    h, w = shape
    out = np.full((h, w), np.nan, dtype=np.float32)
    if grid.count == 0:
        return out
    pad = (grid.footprint - grid.step) / 2  # with stride < tile, cells are stride-sized, centred on their tiles
    cols = np.floor(((np.arange(w) + 0.5) * downsample - grid.origin_x - pad) / grid.step).astype(np.int64)
    rows = np.floor(((np.arange(h) + 0.5) * downsample - grid.origin_y - pad) / grid.step).astype(np.int64)
    col_ok, row_ok = (cols >= 0) & (cols < grid.cols), (rows >= 0) & (rows < grid.rows)
    out[np.ix_(row_ok, col_ok)] = heat[np.ix_(rows[row_ok], cols[col_ok])]
    return out


def write_heatmap_png(
    path: Path, thumb: np.ndarray, downsample: float, grid: TileGrid, heat: np.ndarray, label: str
) -> None:
    """Blend the colour-mapped `heat` into the thumbnail (55 % opacity) and save it with a colour bar.

    The blend is done in numpy at thumbnail resolution and drawn as one image: letting matplotlib composite two
    images in level-0 coordinates cost seconds per slide.
    """
    h, w = thumb.shape[:2]
    cmap = matplotlib.colormaps["inferno"]
    values = heat_on_thumbnail(grid, heat, (h, w), downsample)
    on_tile = np.isfinite(values)
    blended = thumb[..., :3].astype(np.float32)
    colours = cmap(np.clip(values[on_tile], 0.0, 1.0))[:, :3] * 255.0
    blended[on_tile] = 0.45 * blended[on_tile] + 0.55 * colours
    dpi = 100
    bar_in = 1.2
    fig = Figure(figsize=(w / dpi + bar_in, h / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, (w / dpi) / (w / dpi + bar_in), 1.0))
    ax.imshow(blended.astype(np.uint8), interpolation="nearest", resample=False)
    ax.set_axis_off()
    cax = fig.add_axes(((w / dpi) / (w / dpi + bar_in) + 0.15 * bar_in / (w / dpi + bar_in), 0.1,
                        0.15 * bar_in / (w / dpi + bar_in), 0.8))
    fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap), cax=cax, label=f"p({label})")
    with atomic_open(path, binary=True) as fh:
        fig.savefig(fh, format="png", dpi=dpi)
