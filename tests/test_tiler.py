"""The tiler (centred or anchored grid, block reader) and the slide backend registry, on synthetic slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from histoeq.errors import InputError
from histoeq.slide import open_slide
from histoeq.slide.backends import BACKENDS, SLIDE_SUFFIXES, open_backend
from histoeq.slide.kept import KeptOpen
from histoeq.slide.tiler import iter_batches, iter_blocks, ordered_map, tile_grid


def _noise_tiff(path: Path, width: int = 610, height: int = 430, mpp: float = 1.0) -> Path:
    rgb = np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, photometric="rgb", tile=(128, 128), compression="zlib",
                     resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path


def test_centred_and_anchored_grids() -> None:
    centred = tile_grid((610, 430), 1.0, 1.0, 50)
    assert (centred.cols, centred.rows) == (12, 8) and (centred.origin_x, centred.origin_y) == (5.0, 15.0)
    assert centred.centred and centred.downsample == 1.0
    # Anchored: every tile whose top-left lies on the slide, the last ones sticking out over the edge.
    anchored = tile_grid((610, 430), 1.0, 1.0, 50, origin=(1, 1))
    assert not anchored.centred and (anchored.cols, anchored.rows) == (13, 9)
    x, y = anchored.top_left_of(np.array([0, anchored.count - 1]))
    assert list(x) == [1, 601] and list(y) == [1, 401]
    # Half the scale, twice the footprint; the rects are the real-valued cells.
    half = tile_grid((610, 430), 1.0, 2.0, 25, stride_px=20)
    assert half.footprint == 50 and half.step == 40 and half.downsample == 2.0
    assert np.allclose(half.rects()[1], [half.origin_x + 40, half.origin_y, 50, 50])


def test_a_slide_smaller_than_a_tile_is_an_error_unless_empty_is_allowed() -> None:
    with pytest.raises(InputError, match="tiny.svs: slide is 40 x 40 px .* too small for one 50 px tile"):
        tile_grid((40, 40), 1.0, 1.0, 50, source="tiny.svs")
    assert tile_grid((40, 40), 1.0, 1.0, 50, allow_empty=True).count == 0
    assert tile_grid((40, 40), 1.0, 1.0, 50, origin=(100, 0), allow_empty=True).count == 0


@pytest.mark.parametrize(("mpp", "stride"), [(1.0, 50), (1.0, 30), (1.6, 50)])
def test_block_reader_gives_the_tiles_of_single_reads(tmp_path: Path, mpp: float, stride: int) -> None:
    """Every kept tile exactly once, equal to reading it alone (native scale: bit-exact; resampled: the block's
    one resampling differs from a tile's own by interpolation phase only)."""
    slide_path = _noise_tiff(tmp_path / "s.tiff")
    with open_slide(slide_path) as slide:
        grid = tile_grid(slide.dimensions, slide.mpp, mpp, 50, stride)
        keep = np.random.default_rng(0).random((grid.rows, grid.cols)) < 0.6
        got = list(iter_blocks(slide, grid, keep, block=3, workers=2))
        indices = np.concatenate([i for i, _ in got])
        tiles = np.concatenate([t for _, t in got])
        assert sorted(indices) == list(np.flatnonzero(keep))
        x, y = grid.top_left_of(indices)
        for k in range(0, len(indices), 7):
            alone = slide.read_region_at((int(x[k]), int(y[k])), (50, 50), grid.downsample)
            if mpp == 1.0:
                assert np.array_equal(tiles[k], alone)
            else:
                assert np.abs(tiles[k].astype(int) - alone).mean() < 40  # same place: noise averages alike
        batches = list(iter_batches(slide, grid, keep, batch_size=7, block=3, workers=2))
        assert all(len(i) == 7 for i, _ in batches[:-1])
        assert np.array_equal(np.concatenate([i for i, _ in batches]), indices)
        assert np.array_equal(np.concatenate([t for _, t in batches]), tiles)


def test_ordered_map_keeps_input_order() -> None:
    import time

    def slow_first(i: int) -> int:
        time.sleep(0.02 if i == 0 else 0.0)
        return i * i

    assert list(ordered_map(slow_first, range(20), workers=4, ahead=3)) == [i * i for i in range(20)]


def test_backend_registry(tmp_path: Path) -> None:
    for backend in BACKENDS:
        assert backend.name and backend.suffixes and backend.unreadable and callable(backend.claims)
    assert SLIDE_SUFFIXES.index(".svs") < SLIDE_SUFFIXES.index(".png")
    assert {".svs", ".tiff", ".ndpi", ".mrxs", ".png", ".jpg"} <= set(SLIDE_SUFFIXES)
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(png)
    backend = open_backend(png)
    assert backend.name == "pil" and backend.level_dimensions == [(30, 20)]
    backend.close()
    broken = tmp_path / "b.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="b.png: not a readable image"):
        open_backend(broken)


def test_kept_open_keeps_a_few_and_closes_everything(tmp_path: Path) -> None:
    paths = [_noise_tiff(tmp_path / f"s{i}.tiff", 100, 100) for i in range(3)]
    opened, closed = [], []

    def opener(path: Path):
        slide = open_slide(path)
        opened.append(path)
        real_close = slide.close
        slide.close = lambda: (closed.append(path), real_close())[1]
        return slide

    with KeptOpen(opener, limit=2) as kept:
        assert [kept.check(p, lambda s: s.dimensions) for p in paths] == [(100, 100)] * 3
        assert closed == [paths[2]]  # beyond the limit: closed at once
        with kept.take(paths[0]) as slide:
            assert slide.dimensions == (100, 100)
        with kept.take(paths[2]):  # not kept: opened again
            pass
    assert opened == [*paths, paths[2]]
    assert sorted(closed) == sorted([*paths, paths[2]])  # paths[1] was never taken: closed on exit
