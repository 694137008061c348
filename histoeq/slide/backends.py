"""Pixel sources behind `Slide`: OpenSlide, tifffile and PIL, each reading one rectangle of one pyramid level.

Every backend follows the `SlideBackend` protocol and returns RGB uint8 with the part outside the level painted
white, so `Slide` does the µm/px arithmetic once for all formats. OpenSlide covers the vendor formats (SVS, NDPI,
MRXS, SCN, generic tiled TIFF); tifffile covers the TIFFs OpenSlide refuses (OME-TIFF, strip TIFF, JPEG 2000 / 16-bit
/ grey tiles via imagecodecs); PIL reads PNG/JPEG as one-level slides. `BACKENDS` is the probe order of
`open_backend`, and `SLIDE_SUFFIXES` (the file suffixes of slides, for finding a slide by name) comes from it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from histoeq.errors import InputError, clip
from histoeq.slide.budget import check_decode, check_tiff_structure
from histoeq.slide.pixels import UnsupportedTiff, tiff_colour, to_rgb8

# tifffile logs every malformed tag at ERROR level; the user gets one InputError line instead.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)


def _paste(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> None:
    """Copy `src` into `dst` at (x, y) in dst coordinates, clipping what falls outside."""
    h, w = dst.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + src.shape[1], w), min(y + src.shape[0], h)
    if x1 > x0 and y1 > y0:
        dst[y0:y1, x0:x1] = src[y0 - y:y1 - y, x0 - x:x1 - x]


class TruncatedTiff(ValueError):
    """The TIFF's directory points past the end of the file."""


class SlideBackend(Protocol):
    """What `Slide` needs from a pixel source, and what `open_backend` needs to pick one.

    Class attributes: `name` (reported as the slide's backend), `suffixes` (file suffixes of the slides it is for),
    `unreadable` (the problem reported when it was the last backend tried on a file and failed). `claims(path,
    head)` says whether to try it on a file (`head`: its first bytes, empty for a folder); the constructor opens
    the file and raises on anything it cannot read. Levels are listed finest first; `read` takes level pixels and
    paints what lies outside the level white; `close` releases the file."""

    name: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    unreadable: ClassVar[str]
    vendor: str
    level_dimensions: list[tuple[int, int]]
    level_downsamples: list[float]
    mpp: float | None
    properties: dict[str, str]

    def __init__(self, path: Path) -> None: ...

    @classmethod
    def claims(cls, path: Path, head: bytes) -> bool: ...

    def overview(self) -> np.ndarray | None:
        """The scanner's own downsampled copy of the whole image, or None."""

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray: ...

    def close(self) -> None: ...


PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


class OpenSlideBackend:
    name = "openslide"
    suffixes = (".svs", ".tiff", ".tif", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
    unreadable = "not a readable slide (unknown format)"

    @classmethod
    def claims(cls, path: Path, head: bytes) -> bool:
        """Every file but the plain images (OpenSlide recognises its formats by content)."""
        return path.suffix.lower() not in PIL_SUFFIXES

    def __init__(self, path: Path) -> None:
        import openslide  # each backend loads its library only when a slide needs it (OpenSlide: a C library)

        self._slide = openslide.OpenSlide(str(path))
        props = self._slide.properties
        self.vendor = props.get("openslide.vendor", "unknown")
        self.level_dimensions = [tuple(map(int, d)) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        try:
            mx, my = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
            self.mpp: float | None = (mx + my) / 2 if mx > 0 and my > 0 else None
        except (KeyError, ValueError):
            self.mpp = None
        if self.vendor == "generic-tiff":  # from the resolution tags: may be a 300 dpi default
            self.mpp = plausible_tag_mpp(self.mpp)
        self.properties = dict(props)

    def overview(self) -> np.ndarray | None:
        """The scanner's own downsampled copy of the whole image (Aperio 'thumbnail'), or None."""
        if self.vendor != "aperio" or "thumbnail" not in self._slide.associated_images:
            return None
        return to_rgb8(np.asarray(self._slide.associated_images["thumbnail"]))

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        # OpenSlide takes the location in level-0 pixels and paints outside the slide transparent.
        region = self._slide.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h))
        return to_rgb8(np.asarray(region))

    def close(self) -> None:
        self._slide.close()


class TiffFileBackend:
    """Tiled or stripped TIFF pyramids via tifffile; tiles decoded on demand (imagecodecs) with a small LRU cache."""

    name = "tifffile"
    suffixes = (".tiff", ".tif")
    unreadable = "truncated or corrupt TIFF"
    _CACHE_TILES = 256

    @classmethod
    def claims(cls, path: Path, head: bytes) -> bool:
        return head in TIFF_MAGIC and path.suffix.lower() not in PIL_SUFFIXES

    def __init__(self, path: Path) -> None:
        import tifffile

        check_tiff_structure(path)  # loops and endless page lists, before tifffile's series parsing sees them
        self._path = path
        self._tif = tifffile.TiffFile(str(path))
        if not self._tif.series:
            raise ValueError("no image series")
        # The slide is the largest image: a label or macro image may come first (some scanners and converters).
        series = max(self._tif.series, key=_level0_area)
        self._pages = [level.pages[0] for level in series.levels]
        for page in self._pages:
            page.shape  # noqa: B018  (forces the page to be parsed now, so broken files fail at open)
        size = self._tif.filehandle.size
        for page in self._pages:
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
            if not ends:
                raise TruncatedTiff("no image data offsets (truncated or corrupt header)")
            if max(ends) > size:
                raise TruncatedTiff(f"image data ends at byte {max(ends)} but the file has {size} bytes (truncated)")
        try:
            self._colour = [tiff_colour(page) for page in self._pages]
            for page in self._pages:
                _check_layout(page)
        except UnsupportedTiff:
            self._tif.close()  # refused: do not leave the file open
            raise
        self._planar = [int(page.planarconfig) == PLANAR_SEPARATE for page in self._pages]
        self.level_dimensions = [(int(p.imagewidth), int(p.imagelength)) for p in self._pages]
        w0 = self.level_dimensions[0][0]
        self.level_downsamples = [w0 / d[0] for d in self.level_dimensions]
        t = self._tif
        self.vendor = "ome-tiff" if t.is_ome else "aperio" if t.is_svs else "generic-tiff"
        self.mpp = self._read_mpp()
        self.properties: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._whole: dict[int, np.ndarray] = {}

    def _read_mpp(self) -> float | None:
        t, page = self._tif, self._pages[0]
        if t.is_ome:
            mpp = _ome_mpp(t.ome_metadata or "", *self.level_dimensions[0])
            if mpp is not None:
                return mpp
        if t.is_svs:
            import re

            m = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
            if m:
                return float(m.group(1))
        tag, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
        if tag is None:
            return None
        num, den = tag.value
        if not (num and den):
            return None
        per_unit = num / den
        if t.is_imagej:  # ImageJ stores pixels per its own unit (ResolutionUnit is none)
            um = UNIT_UM.get(str((t.imagej_metadata or {}).get("unit", "")).strip())
            return um / per_unit if um else None
        um = {2: 25400.0, 3: 10000.0}.get(int(unit.value), 0.0) if unit is not None else 0.0
        return plausible_tag_mpp(um / per_unit)

    def overview(self) -> np.ndarray | None:
        """The scanner's own downsampled copy of the whole image (Aperio 'Thumbnail'), or None."""
        if self.vendor != "aperio":
            return None
        for series in self._tif.series:
            if series.name == "Thumbnail":
                with self._lock:
                    return to_rgb8(series.asarray())
        return None

    def _tile(self, level: int, index: int) -> np.ndarray:
        key = (level, index)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            page = self._pages[level]
            offset, count = page.dataoffsets[index], page.databytecounts[index]
            if count:
                fh = self._tif.filehandle
                fh.seek(offset)
                data = fh.read(count)
            else:
                data = None
        seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        tile = (self._colour[level].apply(seg[0]) if seg is not None
                else np.full((page.tilelength, page.tilewidth, 3), 255, np.uint8))
        with self._lock:
            self._cache[key] = tile
            while len(self._cache) > self._CACHE_TILES:
                self._cache.popitem(last=False)
        return tile

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        page = self._pages[level]
        out = np.full((h, w, 3), 255, np.uint8)
        if not page.is_tiled:  # strips: decode the level once (plain TIFFs are small enough)
            if level not in self._whole:
                lw, lh = self.level_dimensions[level]
                stored = int(page.samplesperpixel) * page.dtype.itemsize
                # Stored samples and their RGB copy, besides the region asked for.
                check_decode(self._path, f"the {lw} x {lh} px strip image (level {level})",
                             lw * lh * (stored + 3) + w * h * 3)
                with self._lock:
                    samples = page.asarray()
                    if self._planar[level]:  # (samples, h, w) planes -> (h, w, samples)
                        samples = np.moveaxis(samples, 0, -1)
                    self._whole[level] = self._colour[level].apply(samples)
            _paste(out, self._whole[level], -x, -y)
            return out
        tw, th = page.tilewidth, page.tilelength
        lw, lh = self.level_dimensions[level]
        across = -(-lw // tw)
        for ty in range(max(y, 0) // th, min(y + h, lh) // th + 1):
            for tx in range(max(x, 0) // tw, min(x + w, lw) // tw + 1):
                if ty * th >= lh or tx * tw >= lw or (ty + 1) * th <= y or (tx + 1) * tw <= x:
                    continue
                tile = self._tile(level, ty * across + tx)
                # Tiles at the right/bottom edge are padded by the encoder; crop them to the level.
                tile = tile[: min(th, lh - ty * th), : min(tw, lw - tx * tw)]
                _paste(out, tile, tx * tw - x, ty * th - y)
        return out

    def close(self) -> None:
        self._tif.close()


PLANAR_SEPARATE = 2
# Spellings of length units in OME and ImageJ metadata (ImageJ writes the escape "\u00B5m" as plain text).
UNIT_UM = {"µm": 1.0, "\u03bcm": 1.0, "\\u00B5m": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3,
           "mm": 1e3, "cm": 1e4, "m": 1e6}
# A resolution tag coarser than this (finer than 2,540 dpi) is a document or screen resolution that image software
# writes by default (72, 96, 300, 600 dpi), not a microscope's; IDC's reassembled slides are 4 µm/px.
MAX_TAG_MPP = 10.0


def plausible_tag_mpp(mpp: float | None) -> float | None:
    """µm/px from TIFF resolution tags, or None when it cannot be a scan resolution (then the user gives it)."""
    return mpp if mpp is not None and 0 < mpp <= MAX_TAG_MPP else None


def _level0_area(series: object) -> int:
    page = series.levels[0].pages[0]
    return int(page.imagewidth) * int(page.imagelength)


def _check_layout(page: object) -> None:
    """Refuse layouts read here with wrong geometry: rotated/mirrored storage (Orientation tag), which OpenSlide
    ignores too, and tiled separate colour planes (OpenSlide reads those; strips are rearranged in `read`)."""
    orientation = page.tags.get("Orientation")
    if orientation is not None and int(orientation.value) != 1:
        raise UnsupportedTiff(f"TIFF Orientation {int(orientation.value)} (stored rotated or mirrored) is not "
                              "supported; re-save it top-left", openslide_may_read=False)
    if page.is_tiled and int(page.planarconfig) == PLANAR_SEPARATE and int(page.samplesperpixel) > 1:
        raise UnsupportedTiff("tiled TIFF with separate colour planes is not supported; convert it to RGB")


def _ome_mpp(xml: str, width: int, height: int) -> float | None:
    """PhysicalSizeX of the OME Image whose size is (width, height), in µm (OME's default unit)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for pixels in root.iter():
        if not pixels.tag.endswith("Pixels"):
            continue
        if pixels.get("SizeX") != str(width) or pixels.get("SizeY") != str(height):
            continue
        try:
            size = float(pixels.get("PhysicalSizeX", "nan"))
        except ValueError:
            return None
        um = UNIT_UM.get(pixels.get("PhysicalSizeXUnit", "µm"))
        return size * um if um and size > 0 and np.isfinite(size) else None
    return None


class PilBackend:
    """PNG/JPEG (and other PIL formats) as a one-level slide, decoded once, on the first read.

    The size comes from the header, checked against the decode budget before anything is decoded (PIL's own
    decompression-bomb limit counts pixels and is off: slides are large on purpose); opening a slide only to learn
    its geometry, as `predict` does before its run, decodes nothing."""

    name = "pil"
    suffixes = PIL_SUFFIXES
    unreadable = "not a readable image"

    @classmethod
    def claims(cls, path: Path, head: bytes) -> bool:
        return path.suffix.lower() in PIL_SUFFIXES

    def __init__(self, path: Path) -> None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        self._path = path
        with Image.open(path) as img:
            self.vendor = (img.format or "image").lower()
            w, h = img.size
            stored = PIL_MODE_BYTES.get(img.mode, 4)
            # The decoded image, its upright copy and the RGB result can be alive at once. Checked before the
            # EXIF orientation is read: PIL decodes a whole PNG to look for EXIF data after the pixels.
            check_decode(path, f"the {w} x {h} px image", w * h * (2 * stored + 3))
            swapped = _exif_orientation(img) in EXIF_SWAPPED
            if self.vendor == "png":  # chunk checksums, without inflating: a truncated file fails at open, not mid-run
                img.verify()
        self.level_dimensions = [(h, w) if swapped else (w, h)]
        self.level_downsamples = [1.0]
        self.mpp = None  # PNG/JPEG carry no trustworthy scan resolution
        self.properties = {}
        self._pixels: np.ndarray | None = None
        self._lock = threading.Lock()

    def _decoded(self) -> np.ndarray:
        with self._lock:
            if self._pixels is None:
                from PIL import Image, ImageOps

                try:
                    with Image.open(self._path) as img:
                        img.load()
                        img = ImageOps.exif_transpose(img)  # camera JPEGs store rotated pixels and an EXIF Orientation
                        if img.mode not in ("RGB", "RGBA", "L", "LA", "I;16", "I"):
                            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
                        pixels = to_rgb8(np.asarray(img))
                except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for truncated or corrupt data
                    raise InputError(self._path, f"not a readable image ({_short(exc)})") from None
                if (pixels.shape[1], pixels.shape[0]) != self.level_dimensions[0]:
                    raise InputError(self._path, "image size differs from its header")
                self._pixels = pixels
            return self._pixels

    def overview(self) -> np.ndarray | None:
        return None

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.full((h, w, 3), 255, np.uint8)
        _paste(out, self._decoded(), -x, -y)
        return out

    def close(self) -> None:
        self._pixels = None


# Bytes per pixel PIL holds for each mode it decodes to (others are converted to RGB or RGBA).
PIL_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 2, "I": 4, "F": 4}
EXIF_SWAPPED = {5, 6, 7, 8}  # EXIF orientations that turn the stored image by 90 degrees


def _exif_orientation(img: object) -> int | None:
    """The EXIF Orientation stored ahead of the pixels (JPEG APP1, PNG eXIf before IDAT), read without decoding:
    PIL's `getexif` decodes a whole PNG to look for EXIF data after the pixels too."""
    from PIL import Image

    raw = img.info.get("exif")
    if not raw:
        return None
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:  # malformed EXIF: PIL's own transpose ignores it too
        return None
    return exif.get(0x0112)


TIFFFILE_FAST_VENDORS = {"generic-tiff", "aperio"}
# none, LZW, JPEG, deflate (x2): decoded identically to OpenSlide. Aperio's JPEG 2000 (33003/33005) carries YCbCr
# that only OpenSlide converts, so those stay with OpenSlide.
TIFFFILE_SAFE_COMPRESSIONS = {1, 5, 7, 8, 32946}
BACKENDS: list[type[SlideBackend]] = [OpenSlideBackend, TiffFileBackend, PilBackend]
# Slide file suffixes, for finding a slide by its name: whole-slide formats first, plain images last.
SLIDE_SUFFIXES: tuple[str, ...] = tuple(dict.fromkeys(sfx for backend in BACKENDS for sfx in backend.suffixes))


def open_backend(path: Path, prefer: str | None = None) -> SlideBackend:
    """Open `path` with the first backend of `BACKENDS` that claims it and can read it.

    In practice: PIL for PNG/JPEG, else OpenSlide, else tifffile for TIFFs OpenSlide refuses. Plain TIFF pyramids
    that OpenSlide recognises (generic-tiff, aperio) are then read by tifffile when its levels are exactly
    OpenSlide's: same pixels at native levels (checked in tests), about 5x faster decoding here, and no sub-pixel
    shift at levels with inexact downsamples. `prefer="openslide"` keeps OpenSlide for pixels.
    """
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir() and not (path / "Slidedat.ini").exists():
        raise InputError(path, "is a folder, not a slide")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(path, "not a readable slide (zero-byte file)")
    head = b""
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                head = fh.read(4)
        except OSError as exc:
            raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    errors: list[str] = []
    unreadable = OpenSlideBackend.unreadable
    for backend_type in BACKENDS:
        if not backend_type.claims(path, head):
            continue
        unreadable = backend_type.unreadable
        try:
            backend = backend_type(path)
        except InputError:  # a budget or format refusal that already names the file and the reason
            raise
        except UnsupportedTiff as exc:  # a file the backend understands and refuses, with the reason
            raise InputError(path, str(exc)) from None
        except Exception as exc:  # each library raises its own types (and OSError, struct errors) for broken files
            errors.append(f"{backend_type.name}: {_short(exc)}")
            continue
        if isinstance(backend, OpenSlideBackend) and prefer != "openslide":
            return _tifffile_pixels_for(backend, path)
        return backend
    raise InputError(path, f"{unreadable} ({'; '.join(errors)})")


def _tifffile_pixels_for(osb: OpenSlideBackend, path: Path) -> OpenSlideBackend | TiffFileBackend:
    if osb.vendor not in TIFFFILE_FAST_VENDORS:
        return osb
    try:
        tfb = TiffFileBackend(path)
    except InputError:
        osb.close()
        raise
    except TruncatedTiff as exc:  # OpenSlide opens such files and fails later, tile by tile
        osb.close()
        raise InputError(path, f"truncated or corrupt TIFF ({exc})") from None
    except UnsupportedTiff as exc:
        if exc.openslide_may_read:
            return osb
        osb.close()
        raise InputError(path, str(exc)) from None
    except Exception:  # anything else tifffile cannot parse stays with OpenSlide
        return osb
    if tfb.vendor == "ome-tiff":  # OpenSlide sees only the first IFD of an OME pyramid and not its µm/px
        osb.close()
        return tfb
    os_dims, tf_dims = osb.level_dimensions, tfb.level_dimensions
    if tf_dims[0][0] * tf_dims[0][1] > os_dims[0][0] * os_dims[0][1]:
        # OpenSlide took a label or macro image stored first for level 0: the slide is tifffile's largest image.
        osb.close()
        return tfb
    exact = tf_dims == os_dims
    # Levels OpenSlide does not see (a pyramid in SubIFDs): without them a thumbnail decodes all of level 0.
    more_levels = tf_dims[0] == os_dims[0] and len(tf_dims) > len(os_dims)
    if (not (exact or more_levels) or any(not p.is_tiled for p in tfb._pages)
            or any(int(p.compression) not in TIFFFILE_SAFE_COMPRESSIONS for p in tfb._pages)):
        tfb.close()
        return osb
    tfb.vendor, tfb.mpp, tfb.properties = osb.vendor, osb.mpp or tfb.mpp, osb.properties
    if exact:
        tfb.level_downsamples = list(osb.level_downsamples)
    osb.close()
    return tfb


def _short(exc: Exception) -> str:
    return clip(str(exc)) or type(exc).__name__
