"""Heatmaps: the tile probabilities as a grid array (what the equivariance test compares) and as PNG pictures.

The heatmap PNG is drawn with matplotlib's object API (no pyplot, so no global state and no display is needed).
Its colours are chosen so that they cannot be mistaken for stain and so that the colour bar tells the truth:

* the slide is shown in grey (lightened), so pink and purple on the picture can only come from nowhere;
* the probability uses viridis from a quarter of its range up (blue, teal, green, yellow): perceptually uniform and
  readable with the common colour-vision deficiencies; its violet start is left out, as is cividis, whose grey
  middle would vanish into the grey slide;
* the colours are blended into the grey slide at `ALPHA`, so the bar is drawn with the same blend: its width runs
  from the darkest to the lightest tissue grey under the tiles, and every overlay pixel's colour appears in it.

A title names the slide and the model, and a scale bar in mm comes from the slide's µm/px. The tissue mask that chose
the tiles is written as its own PNG (`write_tissue_mask_png`), so what was skipped as glass can be checked.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from PIL import Image, PngImagePlugin

from histoeq.atomic import atomic_open
from histoeq.slide.tiler import TileGrid

HEATMAP_CMAP = "viridis"
CMAP_START = 0.25  # where in viridis p = 0 starts (#3b528b, blue); below it viridis turns violet
ALPHA = 0.6  # weight of the probability colour over the grey slide
GREY_FLOOR = 0.35  # the slide's darkest grey (0..1): keeps dark tissue from swallowing the overlay colours
BAR_LABEL = "colour bar"  # the colour bar axes' label, so it can be found in the figure


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


def grey_slide(thumb: np.ndarray) -> np.ndarray:
    """(h, w) float grey in [GREY_FLOOR, 1]: the thumbnail's luminance (ITU-R 601), lightened."""
    rgb = thumb[..., :3].astype(np.float32) / 255.0
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return GREY_FLOOR + (1.0 - GREY_FLOOR) * lum


def heatmap_cmap() -> ListedColormap:
    """The probability colour map: `HEATMAP_CMAP` from `CMAP_START` to its end, as a 256-colour map."""
    base = matplotlib.colormaps[HEATMAP_CMAP]
    return ListedColormap(base(np.linspace(CMAP_START, 1.0, 256)), name=f"{HEATMAP_CMAP}[{CMAP_START:g}:1]")


def blend(p: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] of probabilities `p` drawn at `ALPHA` over greys `grey` (same shape): the one rule used for
    both the overlay and its colour bar."""
    colours = heatmap_cmap()(np.clip(p, 0.0, 1.0))[..., :3]
    return (1.0 - ALPHA) * grey[..., None] + ALPHA * colours


def nice_length_mm(width_mm: float) -> float:
    """A 1, 2 or 5 x 10^k mm length of at most a fifth of `width_mm` (a scale bar that fits and reads easily)."""
    target = width_mm / 5.0
    power = 10.0 ** math.floor(math.log10(target))
    return max(m * power for m in (1.0, 2.0, 5.0) if m * power <= target)


def heatmap_figure(thumb: np.ndarray, downsample: float, grid: TileGrid, heat: np.ndarray, label: str, *,
                   slide_name: str | None = None, model_name: str | None = None, mpp: float | None = None
                   ) -> Figure:
    """The heatmap as a matplotlib Figure (not yet written): overlay, colour bar, title and, when `mpp` (level-0
    µm/px) is given, a scale bar in mm.

    The blend is done in numpy at thumbnail resolution and drawn as one image: letting matplotlib composite two
    images in level-0 coordinates cost seconds per slide.
    """
    h, w = thumb.shape[:2]
    values = heat_on_thumbnail(grid, heat, (h, w), downsample)
    on_tile = np.isfinite(values)
    grey = grey_slide(thumb)
    picture = np.repeat(grey[..., None], 3, axis=2)
    picture[on_tile] = blend(values[on_tile], grey[on_tile])

    dpi, bar_in, title_in = 100, 1.4, 0.45
    fig_w, fig_h = w / dpi + bar_in, h / dpi + title_in
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, (w / dpi) / fig_w, (h / dpi) / fig_h))
    ax.imshow((picture * 255.0 + 0.5).astype(np.uint8), interpolation="nearest", resample=False)
    ax.set_axis_off()
    title = " · ".join(part for part in (slide_name, model_name) if part)
    fig.suptitle(f"{title}\np({label}) per tile" if title else f"p({label}) per tile", fontsize=10,
                 x=0.5 * (w / dpi) / fig_w, y=1.0 - 0.04 / fig_h, va="top")

    # The bar's columns: p drawn over the darkest .. lightest tissue grey that lies under the tiles.
    lo, hi = (np.percentile(grey[on_tile], [1, 99]) if on_tile.any() else (1.0, 1.0))
    p = np.linspace(0.0, 1.0, 256)[:, None]
    bar = blend(np.broadcast_to(p, (256, 8)), np.broadcast_to(np.linspace(lo, hi, 8)[None, :], (256, 8)))
    cax = fig.add_axes(((w / dpi + 0.25) / fig_w, 0.12, 0.3 / fig_w, 0.72 * (h / dpi) / fig_h), label=BAR_LABEL)
    cax.imshow(bar, origin="lower", extent=(0.0, 1.0, 0.0, 1.0), aspect="auto", interpolation="nearest")
    cax.set_ylim(0.0, 1.0)
    cax.yaxis.tick_right()
    cax.yaxis.set_label_position("right")
    cax.set_ylabel(f"p({label})")
    cax.set_xticks([0.0, 1.0], ["dark", "light"], fontsize=6)
    cax.set_xlabel("tissue", fontsize=7)

    if mpp is not None and mpp > 0 and w > 0:
        um_per_px = float(downsample) * float(mpp)
        length = nice_length_mm(w * um_per_px / 1000.0)
        ax.add_artist(AnchoredSizeBar(ax.transData, length * 1000.0 / um_per_px, f"{length:g} mm", "lower left",
                                      pad=0.6, borderpad=0.8, sep=4, frameon=True, size_vertical=max(2.0, h / 200),
                                      color="black", fontproperties={"size": 8}))
    return fig


def write_heatmap_png(
    path: Path, thumb: np.ndarray, downsample: float, grid: TileGrid, heat: np.ndarray, label: str, *,
    slide_name: str | None = None, model_name: str | None = None, mpp: float | None = None,
) -> None:
    """Write `heatmap_figure` as a PNG (see there for the arguments)."""
    fig = heatmap_figure(thumb, downsample, grid, heat, label, slide_name=slide_name, model_name=model_name,
                         mpp=mpp)
    with atomic_open(path, binary=True) as fh:
        fig.savefig(fh, format="png", dpi=fig.dpi)


def write_tissue_mask_png(path: Path, mask: np.ndarray, downsample: float, mpp: float | None = None) -> None:
    """The tissue mask (from `histoeq.slide.tissue.tissue_mask` on the thumbnail) as a black/white PNG of the
    thumbnail's size: white = tissue. The level-0 px per mask pixel (and the slide's µm/px) go into the PNG's text
    chunks, so the mask can be laid back onto the slide."""
    info = PngImagePlugin.PngInfo()
    info.add_text("histoeq:downsample", f"{float(downsample):.6g}")
    if mpp is not None:
        info.add_text("histoeq:mpp", f"{float(mpp):.6g}")
    image = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L")
    with atomic_open(path, binary=True) as fh:
        image.save(fh, format="PNG", pnginfo=info)
