"""The heatmap picture and the tissue mask PNG: colours that cannot pass for stain, a colour bar that shows what is
drawn, a title, a scale bar of the right length, and a mask that can be laid back onto the slide."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
from PIL import Image

from histoeq.infer import heatmap
from histoeq.infer.heatmap import BAR_LABEL, blend, heatmap_cmap, heatmap_figure, nice_length_mm
from histoeq.slide.tiler import tile_grid


def _case(stride_px: int | None = None):
    """A 400 x 300 px slide at 1 µm/px, 50 px tiles, thumbnail at downsample 2 with a grey tissue band."""
    grid = tile_grid((400, 300), 1.0, 1.0, 50, stride_px)
    thumb = np.full((150, 200, 3), 255, np.uint8)
    thumb[40:110, 20:180] = (180, 90, 160)  # H&E-like pink-purple tissue
    heat = np.linspace(0.0, 1.0, grid.count, dtype=np.float32).reshape(grid.rows, grid.cols)
    heat[:, 0] = np.nan  # tiles not predicted: the bare slide shows, over a strip of tissue
    return grid, thumb, heat


def _rgb(fig) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return np.asarray(Image.open(buf).convert("RGB")).astype(int)


def test_colour_map_is_viridis_without_its_violet_start() -> None:
    cmap = heatmap_cmap()
    assert heatmap.HEATMAP_CMAP == "viridis" and cmap.name == "viridis[0.25:1]"
    viridis = matplotlib.colormaps["viridis"]
    assert np.allclose(cmap(0.0), viridis(0.25), atol=1e-6) and np.allclose(cmap(1.0), viridis(1.0), atol=1e-6)
    rgb = cmap(np.linspace(0, 1, 64))[:, :3]
    # Pink, purple and magenta (the stain's hues) have green below both red and blue; no colour here does.
    assert (rgb[:, 1] >= np.minimum(rgb[:, 0], rgb[:, 2])).all()
    violet = viridis(0.0)  # what the cut-off start avoids: fails the same check
    assert violet[1] < min(violet[0], violet[2])


def test_overlay_pixels_are_colours_of_the_bar() -> None:
    """Every overlay colour on the picture appears in the colour bar image (the bar shows the blend, not the
    bare colour map), and the bar spans p = 0 .. 1."""
    grid, thumb, heat = _case()
    fig = heatmap_figure(thumb, 2.0, grid, heat, "IDC", slide_name="s.svs", model_name="m", mpp=1.0)
    ax, cax = fig.axes[0], next(a for a in fig.axes if a.get_label() == BAR_LABEL)
    assert cax.get_ylim() == (0.0, 1.0) and cax.get_ylabel() == "p(IDC)"
    bar = (np.asarray(cax.images[0].get_array())[..., :3] * 255).reshape(-1, 3)
    picture = np.asarray(ax.images[0].get_array())[..., :3].reshape(-1, 3).astype(float)
    grey = (picture.max(axis=1) - picture.min(axis=1)) < 2  # bare (grey) slide pixels
    overlay = picture[~grey]
    assert len(overlay) > 1000
    nearest = np.min(np.abs(overlay[::37, None, :] - bar[None, :, :]).max(axis=2), axis=1)
    assert nearest.max() <= 6, nearest.max()  # within rounding and the bar's 256 x 8 sampling
    # The slide itself is shown in grey: the pink tissue outside the tiles keeps no colour.
    bare = np.asarray(ax.images[0].get_array())[40:110, 0:25, :3].astype(int)
    assert (bare.max(axis=2) - bare.min(axis=2)).max() == 0 and bare.min() < 200


def test_blend_rule() -> None:
    p, grey = np.array([0.0, 1.0]), np.array([1.0, 0.5])
    expected = (1 - heatmap.ALPHA) * grey[:, None] + heatmap.ALPHA * heatmap_cmap()(p)[:, :3]
    assert np.allclose(blend(p, grey), expected)


def test_title_and_scale_bar_length() -> None:
    grid, thumb, heat = _case()
    fig = heatmap_figure(thumb, 2.0, grid, heat, "IDC", slide_name="8975.tiff", model_name="se2-ensemble", mpp=4.0)
    assert fig._suptitle.get_text().startswith("8975.tiff · se2-ensemble")
    bars = [a for a in fig.axes[0].artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1
    # 200 thumbnail px x 2 x 4 µm = 1.6 mm wide: a fifth is 0.32 mm, so the bar is 0.2 mm = 25 thumbnail px.
    assert bars[0].txt_label.get_text() == "0.2 mm"
    assert bars[0].size_bar.get_children()[0].get_width() == pytest.approx(25.0)
    no_mpp = heatmap_figure(thumb, 2.0, grid, heat, "IDC")
    assert not [a for a in no_mpp.axes[0].artists if isinstance(a, AnchoredSizeBar)]


@pytest.mark.parametrize("width, length", [(1.6, 0.2), (14.6, 2.0), (9.99, 1.0), (30.0, 5.0), (0.05, 0.01)])
def test_nice_length(width: float, length: float) -> None:
    assert nice_length_mm(width) == pytest.approx(length)


def test_heatmap_png_is_written(tmp_path) -> None:
    grid, thumb, heat = _case(stride_px=25)
    path = tmp_path / "s.heatmap.png"
    heatmap.write_heatmap_png(path, thumb, 2.0, grid, heat, "IDC", slide_name="s", model_name="m", mpp=0.5)
    with Image.open(path) as png:
        assert png.size[0] > 200 and png.size[1] > 150


def test_tissue_mask_png(tmp_path) -> None:
    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:30] = True
    path = tmp_path / "s.tissue.png"
    heatmap.write_tissue_mask_png(path, mask, 32.5, 0.25)
    with Image.open(path) as png:
        assert png.mode == "L" and png.size == (40, 30)
        assert png.text["histoeq:downsample"] == "32.5" and png.text["histoeq:mpp"] == "0.25"
        assert np.array_equal(np.asarray(png) == 255, mask)
