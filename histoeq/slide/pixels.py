"""Decoded samples -> RGB uint8, the one pixel format every backend returns.

A TIFF's samples are not always colours: min-is-white greys are inverted, palette images hold indices into a
colour map, CMYK holds inks, and YCbCr / CIE L*a*b* hold other colour spaces. OpenSlide reads tiled TIFFs through
libtiff's RGBA interface, which converts all of these; tifffile hands the samples over as stored. `tiff_colour`
applies libtiff's rules to tifffile's samples, so both readers give the same pixels (checked against OpenSlide in
tests), and refuses what it cannot convert rather than passing stored samples off as RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class UnsupportedTiff(ValueError):
    """A well-formed TIFF whose pixels this reader cannot turn into RGB (e.g. non-CMYK ink separations).

    `openslide_may_read`: OpenSlide (libtiff) may still read the file correctly (a colour space libtiff converts),
    so a file OpenSlide opened stays with OpenSlide; False when OpenSlide would give wrong pixels too."""

    def __init__(self, message: str, openslide_may_read: bool = True) -> None:
        super().__init__(message)
        self.openslide_may_read = openslide_may_read


# TIFF Photometric values (TIFF 6.0, section 8 and the TIFF/EP and DNG additions tifffile knows).
MINISWHITE, MINISBLACK, RGB, PALETTE, SEPARATED, YCBCR = 0, 1, 2, 3, 5, 6
JPEG_COMPRESSIONS = {6, 7}  # old- and new-style JPEG: the codec returns RGB from YCbCr itself
EXTRASAMPLE_ASSOCALPHA = 1


def to_rgb8(arr: np.ndarray, cmyk: bool = False, max_value: int | None = None,
            premultiplied: bool = False) -> np.ndarray:
    """Any decoded pixel array -> RGB uint8: grey is repeated, alpha composited on white, 16-bit/float scaled.

    Float NaN means no data and becomes white (like the area outside a slide) rather than a cast warning and black.
    uint16 keeps its high byte (as libtiff does); other integers are scaled by `max_value` (default: the largest
    value of the type; a TIFF with fewer bits per sample passes 2**bits - 1); booleans (1-bit images) are 0 or 255.
    `cmyk`: the first four channels are C, M, Y, K inks (TIFF photometric 'separated'), converted as libtiff (hence
    OpenSlide) does, so both readers give the same pixels; a fifth channel is alpha.
    `premultiplied`: the colours are already multiplied by alpha (TIFF associated alpha), so compositing on white
    only adds the white that shows through.
    """
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = _to_uint8(arr, max_value)
    if cmyk:
        ink = arr[:, :, :4].astype(np.uint16)
        rgb = ((255 - ink[:, :, 3:4]) * (255 - ink[:, :, :3]) // 255).astype(np.uint8)
        arr = np.concatenate([rgb, arr[:, :, 4:5]], axis=2)
    channels = arr.shape[2]
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    if channels == 2:  # grey + alpha
        arr = np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:2]], axis=2)
        channels = 4
    if channels >= 4:
        if arr[:, :, 3].min() == 255:  # opaque (the usual case): compositing would be a costly no-op
            return np.ascontiguousarray(arr[:, :, :3])
        alpha = arr[:, :, 3:4].astype(np.uint16)
        rgb = arr[:, :, :3].astype(np.uint16)
        if premultiplied:
            return np.minimum(rgb + (255 - alpha), 255).astype(np.uint8)
        return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(arr[:, :, :3])


def _to_uint8(arr: np.ndarray, max_value: int | None) -> np.ndarray:
    if arr.dtype == np.uint8 and max_value in (None, 255):
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(arr.dtype, np.floating):
        missing = np.isnan(arr)
        scale = 255.0 if arr.max(initial=0, where=~missing) <= 1.0 else 1.0
        return np.clip(np.where(missing, 255.0, arr * scale), 0, 255).astype(np.uint8)
    if arr.dtype == np.uint16 and max_value is None:  # libtiff's 16 -> 8 bits, so tifffile and OpenSlide agree
        return (arr >> 8).astype(np.uint8)
    top = max_value if max_value is not None else np.iinfo(arr.dtype).max
    return (arr.astype(np.float64) * (255.0 / top)).round().clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class TiffColour:
    """How one TIFF page's decoded samples become RGB uint8 (see `tiff_colour`)."""

    kind: str  # "direct" (RGB, grey, JPEG-decoded YCbCr), "inverted" (min-is-white), "palette" or "cmyk"
    max_value: int | None = None  # integer scale for fewer than 8/16 bits per sample; None: the dtype's range
    palette: np.ndarray | None = None  # (entries, 3) uint8 colour map, for "palette"
    premultiplied: bool = False  # the extra sample is associated (premultiplied) alpha

    def apply(self, samples: np.ndarray) -> np.ndarray:
        """`samples` as tifffile decodes them, (h, w) or (h, w, samples per pixel) -> (h, w, 3) uint8."""
        if self.kind == "palette":
            index = samples if samples.ndim == 2 else samples[:, :, 0]
            return self.palette[index.astype(np.intp)]
        if self.kind == "inverted":
            samples = samples if samples.ndim == 3 else samples[:, :, None]
            # Invert the stored value before scaling, as libtiff does; extra samples (alpha) are not inverted.
            grey = samples[:, :, :1]
            if grey.dtype == np.bool_:
                grey = ~grey
            else:
                grey = (self.max_value or np.iinfo(grey.dtype).max) - grey
            samples = np.concatenate([grey, samples[:, :, 1:]], axis=2)
        return to_rgb8(samples, cmyk=self.kind == "cmyk", max_value=self.max_value, premultiplied=self.premultiplied)


def tiff_colour(page: object) -> TiffColour:
    """The conversion of a tifffile page's samples to RGB, following libtiff's RGBA interface.

    Raises UnsupportedTiff for colour spaces it does not convert (CIE L*a*b*, YCbCr outside JPEG, colour filter
    arrays, non-CMYK inks): read as they are, their samples would pass for RGB with wrong colours.
    """
    photometric = int(page.photometric)
    bits = int(page.bitspersample)
    floating = int(page.sampleformat) == 3
    max_value = (1 << bits) - 1 if not floating and 1 < bits < 8 else None
    extras = tuple(int(e) for e in (page.extrasamples or ()))
    # Associated alpha is premultiplied; "unspecified" extra data is taken as plain alpha (libtiff guesses
    # associated, but writers that leave it unspecified store unpremultiplied RGBA).
    premultiplied = bool(extras) and extras[0] == EXTRASAMPLE_ASSOCALPHA
    if photometric in (MINISBLACK, RGB):
        return TiffColour("direct", max_value, premultiplied=premultiplied)
    if photometric == YCBCR and int(page.compression) in JPEG_COMPRESSIONS:
        return TiffColour("direct", max_value, premultiplied=premultiplied)
    if photometric == MINISWHITE:
        if floating:
            raise UnsupportedTiff("floating-point min-is-white TIFF is not supported; convert it to RGB")
        return TiffColour("inverted", max_value, premultiplied=premultiplied)
    if photometric == PALETTE:
        return TiffColour("palette", palette=_palette_rgb8(np.asarray(page.colormap)))
    if photometric == SEPARATED:
        inkset = page.tags.get("InkSet")
        inks = int(page.samplesperpixel) - len(extras)
        if (1 if inkset is None else int(inkset.value)) != 1 or inks != 4:
            raise UnsupportedTiff(f"ink-separated TIFF with {inks} non-CMYK inks is not supported; convert it to RGB")
        return TiffColour("cmyk", max_value, premultiplied=premultiplied)
    name = getattr(page.photometric, "name", str(photometric))
    raise UnsupportedTiff(f"TIFF colour space {name} (photometric {photometric}) is not supported; convert it to RGB")


def _palette_rgb8(colormap: np.ndarray) -> np.ndarray:
    """TIFF ColorMap (3, 2**bits) -> (2**bits, 3) uint8.

    The standard stores 16-bit entries, but some writers store 8-bit values in them; libtiff treats a map whose
    entries are all below 256 as 8-bit and otherwise keeps the high byte. Same rule here, so colours match OpenSlide.
    """
    cmap = colormap.astype(np.uint16).T
    return np.ascontiguousarray(cmap if cmap.max() < 256 else cmap >> 8).astype(np.uint8)
