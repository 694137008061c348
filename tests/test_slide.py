"""Slide reading (all backends) and tissue detection: synthetic files for the formats, CMU-1 for a real SVS."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from histoeq.errors import InputError
from histoeq.slide import open_slide
from histoeq.slide.tissue import otsu_threshold, tissue_fraction, tissue_mask

PINK = (200, 100, 150)


def _image(h: int = 300, w: int = 400) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    img[50:250, 100:300] = PINK
    return img


def _res(mpp: float) -> dict:
    return {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}


@pytest.fixture
def pyramid_tiff(tmp_path):
    """Tiled JPEG pyramid (levels 1, 1/2, 1/4) that OpenSlide reads as generic-tiff, 0.5 µm/px."""
    path = tmp_path / "pyr.tiff"
    img = np.random.default_rng(0).integers(0, 256, (512, 768, 3), dtype=np.uint8)
    img = (img // 64 * 64).astype(np.uint8)  # blocky, so JPEG stays close
    with tifffile.TiffWriter(path) as tw:
        for k in range(3):
            level = img[:: 2**k, :: 2**k]
            tw.write(level, tile=(128, 128), compression="jpeg", photometric="rgb",
                     subfiletype=0 if k == 0 else 1, **_res(0.5 * 2**k))
    return path, img


def test_pyramid_levels_and_region_reads(pyramid_tiff):
    path, _ = pyramid_tiff
    with open_slide(path) as s, open_slide(path, reader="openslide") as ref:
        assert s.vendor == "generic-tiff" and ref.backend == "openslide" and s.backend == "tifffile"
        assert s.dimensions == (768, 512) and s.level_count == 3 and s.mpp == pytest.approx(0.5)
        assert s.level_dimensions == ref.level_dimensions
        # native scale at level 0 and level 1: plain copies, identical to OpenSlide
        for mpp in (0.5, 1.0):
            a = s.read_region((128, 64), (100, 80), mpp)
            b = ref.read_region((128, 64), (100, 80), mpp)
            assert a.shape == (80, 100, 3) and a.dtype == np.uint8
            assert np.array_equal(a, b)
        assert s.best_level(1.9) == 0 and s.best_level(2.0) == 1 and s.best_level(3.0) == 1 and s.best_level(9) == 2
        # off-level scale: one resampling from the finer level, same size out
        assert s.read_region((0, 0), (50, 40), 1.5).shape == (40, 50, 3)
        # partly outside: white padding
        r = s.read_region((760, 500), (20, 20), 0.5)
        assert (r[12:, :] == 255).all() and (r[:, 8:] == 255).all() and not (r[:12, :8] == 255).all()
        thumb, ds = s.thumbnail(200)
        assert max(thumb.shape[:2]) == 200 and ds == pytest.approx(768 / 200)


@pytest.mark.parametrize("kind", ["strip", "jpeg2000", "ome", "grey16", "png-rgba"])
def test_formats_openslide_refuses_or_lacks(tmp_path, kind):
    img = _image()
    if kind == "strip":
        path = tmp_path / "plain.tif"
        tifffile.imwrite(path, img, **_res(0.5))
    elif kind == "jpeg2000":
        path = tmp_path / "j2k.tif"
        tifffile.imwrite(path, img, tile=(128, 128), compression="jpeg2000", **_res(0.5))
    elif kind == "ome":
        path = tmp_path / "x.ome.tif"
        with tifffile.TiffWriter(path, ome=True) as tw:
            tw.write(img, tile=(128, 128), subifds=1, compression="zlib",
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
            tw.write(img[::2, ::2], tile=(128, 128), subfiletype=1, compression="zlib")
    elif kind == "grey16":
        path = tmp_path / "g16.tif"
        tifffile.imwrite(path, (img[:, :, 0].astype(np.uint16) * 257), tile=(128, 128), **_res(0.5))
    else:
        path = tmp_path / "x.png"
        rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
        rgba[0:10, 0:10] = (0, 0, 0, 0)  # transparent -> white
        Image.fromarray(rgba).save(path)
    mpp = None if kind != "png-rgba" else 0.5
    with open_slide(path, mpp=mpp) as s:
        assert s.backend in ({"pil"} if kind == "png-rgba" else {"tifffile"})
        assert s.mpp == pytest.approx(0.5)
        region = s.read_region((90, 40), (30, 30), 0.5)
        expected = PINK if kind != "grey16" else (200, 200, 200)
        assert tuple(region[20, 20]) == pytest.approx(expected, abs=3)
        assert tuple(region[0, 0]) == (255, 255, 255)
        if kind == "ome":
            assert s.vendor == "ome-tiff" and s.level_count == 2
        if kind == "png-rgba":
            assert tuple(s.read_region((0, 0), (5, 5), 0.5)[2, 2]) == (255, 255, 255)


def test_mpp_override_and_missing(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(_image()).save(path)
    with open_slide(path) as s:
        with pytest.raises(InputError, match=r"x\.png: no resolution .*\(mpp=\)"):
            _ = s.mpp
    with open_slide(path, mpp_option="--slide-mpp") as s:  # a command names its own option
        with pytest.raises(InputError, match=r"x\.png: no resolution .*; pass --slide-mpp$"):
            _ = s.mpp
    with open_slide(path, mpp=2.0) as s:
        assert s.mpp == 2.0 and s.read_region((0, 0), (100, 75), 8.0).shape == (75, 100, 3)
    with pytest.raises(InputError, match="positive"):
        open_slide(path, mpp=-1)
    with pytest.raises(InputError, match="--mpp must be a positive number, got 0"):
        open_slide(path, mpp=0, mpp_option="--mpp")


@pytest.mark.parametrize("content,problem", [(b"", "zero-byte"), (b"hello, not a slide\n", "not a readable slide"),
                                             (300, "truncated or corrupt TIFF"), (0.6, "truncated")])
def test_unreadable_files(tmp_path, content, problem):
    path = tmp_path / "bad.svs"
    if not isinstance(content, bytes):  # a real tiled TIFF cut in its header (300 bytes) or in its pixel data
        good = tmp_path / "good.tif"
        tifffile.imwrite(good, np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8),
                         tile=(128, 128), compression="zlib", **_res(0.5))
        data = good.read_bytes()
        content = data[:content] if isinstance(content, int) else data[: int(len(data) * content)]
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as err:
        open_slide(path)
    assert str(err.value).startswith(str(path))
    with pytest.raises(InputError, match="no such file"):
        open_slide(tmp_path / "missing.svs")


def test_otsu_and_tissue_fraction():
    values = np.concatenate([np.full(100, 10), np.full(100, 200)]).astype(np.uint8)
    assert 10 <= otsu_threshold(values) < 200
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True  # level-0 [20, 50) x [20, 50) at downsample 10
    rects = [[20, 20, 30, 30], [15, 15, 10, 10], [0, 0, 100, 100], [45, 45, 10, 10], [500, 500, 10, 10]]
    assert tissue_fraction(mask, 10.0, rects) == pytest.approx([1.0, 0.25, 0.09, 0.25, 0.0])


def test_tissue_mask_synthetic():
    img = np.full((200, 200, 3), 245, np.uint8)
    img[40:160, 40:160] = PINK
    img[90:95, 90:95] = 245  # a small hole: filled
    img[5, 5] = PINK  # a speck: removed
    mask = tissue_mask(img)
    assert mask[40:160, 40:160].all() and mask.sum() == 120 * 120
    assert not tissue_mask(np.full((100, 100, 3), 250, np.uint8)).any()


@pytest.mark.realdata
def test_cmu_svs(cmu_svs):
    with open_slide(cmu_svs) as s:
        assert s.vendor == "aperio" and s.mpp == pytest.approx(0.499)
        assert s.dimensions == (2220, 2967) and s.level_count == 1
        region = s.read_region((1000, 1000), (256, 256), 1.0)
        assert region.shape == (256, 256, 3) and 50 < region.mean() < 250
        thumb, ds = s.thumbnail(1024)
        assert max(thumb.shape[:2]) == 1024 and ds == pytest.approx(2967 / 1024, rel=1e-3)
        # Looked at (thumbnail + mask side by side): the mask covers the H&E section, not the glass; the section
        # fills about a quarter of the field; pale collagen at the edges is partly left out.
        fraction = tissue_mask(thumb).mean()
        assert 0.18 < fraction < 0.40
    with open_slide(cmu_svs, reader="openslide") as ref, open_slide(cmu_svs) as fast:
        assert np.array_equal(ref.read_region((500, 700), (300, 200), 0.499),
                              fast.read_region((500, 700), (300, 200), 0.499))


def _cmyk() -> np.ndarray:
    """CMYK inks of `_image()` (K = 0, so RGB = 255 - CMY exactly) with a grey K-only square at [0, 20)²."""
    rgb = _image()
    cmyk = np.dstack([255 - rgb, np.zeros(rgb.shape[:2], np.uint8)])
    cmyk[:20, :20] = (0, 0, 0, 55)  # K only: grey 200
    return cmyk


@pytest.mark.parametrize("kind", ["strip", "tiled", "pil"])
def test_cmyk_tiff_is_converted_to_rgb(tmp_path, kind):
    path = tmp_path / f"{kind}.tif"
    if kind == "pil":
        Image.fromarray(_cmyk(), mode="CMYK").save(path)
    else:
        tifffile.imwrite(path, _cmyk(), photometric="separated", **_res(0.5),
                         **({"tile": (128, 128), "compression": "zlib"} if kind == "tiled" else {}))
    with open_slide(path, mpp=0.5) as s:
        region = s.read_region((0, 0), (400, 300), 0.5)
        assert tuple(region[150, 200]) == PINK and tuple(region[10, 10]) == (200, 200, 200)
        assert tuple(region[299, 399]) == (255, 255, 255)
    if kind == "tiled":  # OpenSlide (libtiff) reads it too: the same pixels
        with open_slide(path, reader="openslide") as ref:
            assert ref.backend == "openslide" and np.array_equal(ref.read_region((0, 0), (400, 300), 0.5), region)


def test_non_cmyk_ink_separation_is_refused(tmp_path):
    path = tmp_path / "inks.tif"
    tifffile.imwrite(path, _cmyk(), photometric="separated", extratags=[(332, 3, 1, 2, True)])  # InkSet: not CMYK
    with pytest.raises(InputError, match="not supported") as err:
        open_slide(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_float_tiff_with_nan_reads_cleanly(tmp_path):
    import warnings

    values = np.asarray(_image(), np.float32) / 255.0
    values[:10] = np.nan
    tifffile.imwrite(tmp_path / "part.tif", values, photometric="rgb", **_res(0.5))
    tifffile.imwrite(tmp_path / "all.tif", np.full((64, 64, 3), np.nan, np.float32), photometric="rgb",
                     tile=(32, 32), **_res(0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast" and the like
        with open_slide(tmp_path / "part.tif") as s:
            region = s.read_region((0, 0), (400, 300), 0.5)
            assert tuple(region[150, 200]) == PINK  # NaN elsewhere does not spoil the 0..1 scaling
            assert (region[:10] == 255).all()  # no data: white, like outside the slide
        with open_slide(tmp_path / "all.tif") as s:
            assert (s.read_region((0, 0), (64, 64), 0.5) == 255).all()


def _grey() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (300, 400), dtype=np.uint8)


def _colormap(bits16: bool) -> np.ndarray:
    """A TIFF ColorMap; `bits16=False` stores 8-bit values in the 16-bit fields, as some writers do."""
    cmap = np.random.default_rng(6).integers(0, 256, (3, 256)).astype(np.uint16)
    return cmap * 257 if bits16 else cmap


@pytest.mark.parametrize("kind", ["miniswhite", "miniswhite16", "palette", "palette8", "ycbcr", "cielab"])
def test_tiled_tiff_colour_spaces_match_openslide(tmp_path, kind):
    """OpenSlide converts these colour spaces through libtiff; histoeq's own TIFF reader must give the same pixels
    (min-is-white and palette) or leave the file to OpenSlide (YCbCr without JPEG, CIE L*a*b*), never stored
    samples read as RGB."""
    path = tmp_path / f"{kind}.tif"
    # Whole tiles only: OpenSlide 4 paints the padded part of 16-bit edge tiles white (not histoeq's to match).
    grey, rgb = _grey()[:256, :384], _image()[:256, :384]
    write = {
        "miniswhite": lambda: tifffile.imwrite(path, grey, photometric="miniswhite", tile=(128, 128), **_res(0.5)),
        "miniswhite16": lambda: tifffile.imwrite(path, grey.astype(np.uint16) * 200 + 99, photometric="miniswhite",
                                                 tile=(128, 128), **_res(0.5)),
        "palette": lambda: tifffile.imwrite(path, grey, photometric="palette", colormap=_colormap(True),
                                            tile=(128, 128), **_res(0.5)),
        "palette8": lambda: tifffile.imwrite(path, grey, photometric="palette", colormap=_colormap(False),
                                             tile=(128, 128), **_res(0.5)),
        "ycbcr": lambda: tifffile.imwrite(path, rgb, photometric="ycbcr", subsampling=(1, 1), tile=(128, 128),
                                          **_res(0.5)),
        "cielab": lambda: tifffile.imwrite(path, rgb, photometric="cielab", tile=(128, 128), **_res(0.5)),
    }
    write[kind]()
    with open_slide(path) as s, open_slide(path, reader="openslide") as ref:
        assert s.backend == ("tifffile" if kind.startswith(("miniswhite", "palette")) else "openslide")
        region = s.read_region((0, 0), (384, 256), 0.5)
        assert np.array_equal(region, ref.read_region((0, 0), (384, 256), 0.5))
    if kind == "miniswhite":
        assert np.array_equal(region[:, :, 1], 255 - grey)
    if kind == "palette8":
        assert np.array_equal(region, _colormap(False).T[grey])


@pytest.mark.parametrize("kind", ["miniswhite", "palette", "bilevel"])
def test_strip_tiff_colour_spaces_openslide_refuses(tmp_path, kind):
    path = tmp_path / f"{kind}.tif"
    grey = _grey()
    bits = grey > 127
    if kind == "miniswhite":
        tifffile.imwrite(path, grey, photometric="miniswhite", **_res(0.5))
        expected = np.repeat((255 - grey)[:, :, None], 3, axis=2)
    elif kind == "palette":
        tifffile.imwrite(path, grey, photometric="palette", colormap=_colormap(True), **_res(0.5))
        expected = _colormap(False).T[grey].astype(np.uint8)  # 16-bit entries x * 257 keep their high byte x
    else:  # 1 bit per pixel, 0 = white (fax-style min-is-white)
        tifffile.imwrite(path, bits, photometric="miniswhite", **_res(0.5))
        expected = np.repeat(np.where(bits, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    with open_slide(path) as s:
        assert s.backend == "tifffile"
        assert np.array_equal(s.read_region((0, 0), (400, 300), 0.5), expected)


@pytest.mark.parametrize("photometric", ["cielab", "ycbcr"])
def test_unconverted_colour_space_is_refused(tmp_path, photometric):
    path = tmp_path / "lab.tif"  # stripped: OpenSlide refuses it, so only histoeq's TIFF reader could read it
    extra = {"subsampling": (1, 1)} if photometric == "ycbcr" else {}
    tifffile.imwrite(path, _image(), photometric=photometric, **extra, **_res(0.5))
    with pytest.raises(InputError, match="not supported") as err:
        open_slide(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


# ---- layouts other hospitals' files have (found by an audit of synthetic files; OpenSlide as the reference) -------

def _levels(h: int = 512, w: int = 768) -> list[np.ndarray]:
    """A random RGB image with an asymmetric marker, and its 1/2 and 1/4 levels (plain decimation)."""
    img = np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[:64, :96] = (40, 20, 90)
    return [np.ascontiguousarray(img[::k, ::k]) for k in (1, 2, 4)]


def _pyramid(path, levels, first=None, **kw) -> None:
    with tifffile.TiffWriter(path) as tw:
        if first is not None:  # a label or macro image stored before the slide
            tw.write(first, photometric="rgb", tile=(128, 128) if kw.pop("tiled_first", False) else None)
        for k, level in enumerate(levels):
            tw.write(level, tile=(128, 128), photometric="rgb", subfiletype=0 if k == 0 else 1, **_res(0.5 * 2**k),
                     **kw)


@pytest.mark.parametrize("dpi", [72, 300, 600])
def test_document_dpi_is_not_taken_for_a_scan_resolution(tmp_path, dpi):
    """Image software writes 72/300/600 dpi by default; as µm/px that is 353/85/42: ask for --mpp instead."""
    for tiled in (True, False):
        path = tmp_path / f"{dpi}-{tiled}.tif"
        tifffile.imwrite(path, _levels()[0], photometric="rgb", tile=(128, 128) if tiled else None,
                         resolution=(dpi, dpi), resolutionunit="INCH")
        with open_slide(path) as s:
            assert s.metadata_mpp is None
            with pytest.raises(InputError, match="no resolution"):
                s.mpp  # noqa: B018


@pytest.mark.parametrize("label", ["strip", "tiled"])
def test_label_image_stored_first_is_not_the_slide(tmp_path, label):
    levels = _levels()
    path = tmp_path / "label-first.tif"
    _pyramid(path, levels, first=np.full((120, 200, 3), 30, np.uint8), tiled_first=label == "tiled")
    with open_slide(path) as s:
        assert s.dimensions == (768, 512) and s.level_count == 3 and s.mpp == pytest.approx(0.5)
        assert np.array_equal(s.read_region((0, 0), (768, 512), 0.5), levels[0])


def test_ome_tiff_takes_the_slide_image_and_converts_its_unit(tmp_path):
    levels = _levels()
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(np.full((120, 200, 3), 30, np.uint8), photometric="rgb",
                 metadata={"axes": "YXS", "Name": "label", "PhysicalSizeX": 20.0, "PhysicalSizeY": 20.0})
        tw.write(levels[0], tile=(128, 128), subifds=2, photometric="rgb",
                 metadata={"axes": "YXS", "Name": "slide", "PhysicalSizeX": 500.0, "PhysicalSizeXUnit": "nm",
                           "PhysicalSizeY": 500.0, "PhysicalSizeYUnit": "nm"})
        for level in levels[1:]:
            tw.write(level, tile=(128, 128), photometric="rgb", subfiletype=1, metadata=None)
    with open_slide(path) as s:
        assert s.dimensions == (768, 512) and s.level_count == 3 and s.mpp == pytest.approx(0.5)
        assert np.array_equal(s.read_region((0, 0), (384, 256), 1.0), levels[1])


def test_imagej_resolution_in_microns(tmp_path):
    path = tmp_path / "imagej.tif"
    tifffile.imwrite(path, _levels()[0], imagej=True, resolution=(2, 2), metadata={"unit": "um"})
    with open_slide(path) as s:
        assert s.mpp == pytest.approx(0.5)


def test_subifd_pyramid_levels_are_used(tmp_path):
    """OpenSlide sees only level 0 of a SubIFD pyramid; without the levels a thumbnail decodes all of level 0."""
    levels = _levels()
    path = tmp_path / "subifd.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(levels[0], subifds=2, tile=(128, 128), photometric="rgb", **_res(0.5))
        for level in levels[1:]:
            tw.write(level, tile=(128, 128), photometric="rgb", subfiletype=1)
    with open_slide(path) as s, open_slide(path, reader="openslide") as ref:
        assert ref.level_count == 1 and s.level_count == 3 and s.mpp == pytest.approx(0.5)
        assert np.array_equal(s.read_region((0, 0), (768, 512), 0.5), ref.read_region((0, 0), (768, 512), 0.5))
        assert np.array_equal(s.read_region((0, 0), (192, 128), 2.0), levels[2])


def test_separate_colour_planes(tmp_path):
    rgb = _levels()[0]
    planes = np.ascontiguousarray(np.moveaxis(rgb, -1, 0))
    tifffile.imwrite(tmp_path / "strips.tif", planes, photometric="rgb", planarconfig="separate", **_res(0.5))
    tifffile.imwrite(tmp_path / "tiles.tif", planes, photometric="rgb", planarconfig="separate", tile=(128, 128),
                     **_res(0.5))
    for name in ("strips.tif", "tiles.tif"):
        with open_slide(tmp_path / name) as s:
            assert np.array_equal(s.read_region((0, 0), (768, 512), 0.5), rgb), name


def test_associated_alpha_matches_openslide(tmp_path):
    rgb = _levels()[0].astype(np.uint16)
    alpha = np.random.default_rng(8).integers(0, 256, rgb.shape[:2], dtype=np.uint16)[:, :, None]
    premultiplied = np.dstack([(rgb * alpha + 127) // 255, alpha]).astype(np.uint8)
    path = tmp_path / "assoc.tif"
    tifffile.imwrite(path, premultiplied, photometric="rgb", extrasamples=[1], tile=(128, 128), **_res(0.5))
    over_white = np.minimum(premultiplied[:, :, :3].astype(np.uint16) + 255 - alpha, 255).astype(np.uint8)
    with open_slide(path) as s, open_slide(path, reader="openslide") as ref:
        assert s.backend == "tifffile"
        region = s.read_region((0, 0), (768, 512), 0.5)
        assert np.array_equal(region, over_white)  # the colours are not multiplied by alpha a second time
        # OpenSlide hands back un-premultiplied 8-bit RGBA, which composites back within one grey level.
        assert np.abs(region.astype(int) - ref.read_region((0, 0), (768, 512), 0.5)).max() <= 1


@pytest.mark.parametrize("tiled", [True, False])
def test_rotated_storage_is_refused(tmp_path, tiled):
    path = tmp_path / "rotated.tif"
    tifffile.imwrite(path, _levels()[0], photometric="rgb", tile=(128, 128) if tiled else None,
                     extratags=[(274, "H", 1, 3, True)], **_res(0.5))
    with pytest.raises(InputError, match="Orientation 3") as err:
        open_slide(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_camera_jpeg_is_turned_upright(tmp_path):
    upright = _levels()[0]
    exif = Image.Exif()
    exif[274] = 6  # stored rotated 90° anticlockwise; display rotates clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(tmp_path / "cam.png", exif=exif)
    with open_slide(tmp_path / "cam.png", mpp=0.5) as s:
        assert s.dimensions == (768, 512)
        assert np.array_equal(s.read_region((0, 0), (768, 512), 0.5), upright)


def test_slide_without_a_level_small_enough_for_an_overview(tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOEQ_DECODE_BUDGET_GB", str(300_000 / 2**30))  # stands in for a 10^6 px square, one level
    tifffile.imwrite(tmp_path / "flat.tif", _levels()[0], photometric="rgb", tile=(128, 128), **_res(0.5))
    with open_slide(tmp_path / "flat.tif") as s, pytest.raises(InputError, match="no pyramid level small enough"):
        s.thumbnail(64)
