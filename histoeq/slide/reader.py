"""One slide interface for every format: read any level-0 rectangle at a requested µm/px.

Models are trained at a physical scale (e.g. 4 µm/px), not at a pyramid level, so `Slide.read_region` takes the
scale and picks the level: the coarsest level that is still at least as fine as asked, then exactly one resampling
(area averaging when shrinking) to the requested output size. Reading at the native scale of a level is a plain
copy, which is what makes extracted patches identical to the scanner's pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType

import cv2  # opencv-python-headless comes with albumentations; fastest area/linear resize available here
import numpy as np

from histoeq.errors import InputError, clip
from histoeq.slide.backends import SlideBackend, _paste, open_backend
from histoeq.slide.budget import check_decode

_LEVEL_TOLERANCE = 1e-2  # pyramid downsamples are reported inexactly (2.0008 for 2)
# A given µm/px this many times finer or coarser than the file's own is said: the tile count changes by its square.
MPP_MISMATCH_FACTOR = 1.5
KEEP_LEVEL_MAX_PX = 32_000_000  # a level this small (<= 96 MB RGB) decoded for a thumbnail is kept in memory


def mpp_override_problem(given: float | None, own: float | None, option: str | None = None) -> str | None:
    """The warning for a given µm/px more than `MPP_MISMATCH_FACTOR` off the file's own, or None.

    Not an error: overriding wrong metadata is what the option is for. But a slip (0.25 for a 4 µm/px slide)
    changes the tile count by the ratio squared without any other sign, so commands warn (`InputWarning`) once per
    slide, after their up-front checks, so that a refused run prints its one error line only."""
    if given is None or own is None or given == own:
        return None
    ratio = max(given, own) / min(given, own)
    if ratio <= MPP_MISMATCH_FACTOR:
        return None
    return (f"{option or 'mpp'} {given:g} µm/px is {ratio:.3g}x {'finer' if given < own else 'coarser'} than the "
            f"{own:g} µm/px recorded in the file; using {given:g}")


class Slide:
    """An open whole-slide image (use `open_slide`). Coordinates are level-0 pixels unless said otherwise."""

    def __init__(self, path: str | Path, mpp: float | None = None, reader: str | None = None,
                 mpp_option: str | None = None) -> None:
        self.path = Path(path)
        # The command-line option that gives `mpp` (--mpp for predict, --slide-mpp for extract), so that the errors
        # below tell the user what to pass; None (library use) names the `mpp` argument.
        self.mpp_option = mpp_option
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise InputError(self.path, f"{mpp_option or 'mpp'} must be a positive number, got {mpp}")
        self._backend: SlideBackend = open_backend(self.path, prefer=reader)
        self.backend: str = self._backend.name
        self.vendor: str = self._backend.vendor
        self.level_dimensions: list[tuple[int, int]] = list(self._backend.level_dimensions)
        self.level_downsamples: list[float] = list(self._backend.level_downsamples)
        self.dimensions: tuple[int, int] = self.level_dimensions[0]
        self.metadata_mpp: float | None = self._backend.mpp
        self._mpp = mpp if mpp is not None else self._backend.mpp
        self._level_cache: dict[int, np.ndarray] = {}
        if self.dimensions[0] <= 0 or self.dimensions[1] <= 0:
            self.close()
            raise InputError(self.path, "slide has no pixels")

    @property
    def mpp(self) -> float:
        """µm per level-0 pixel (the `mpp=` override wins over metadata)."""
        if self._mpp is None:
            how = f"pass {self.mpp_option}" if self.mpp_option else "give the slide's µm/px (mpp=)"
            raise InputError(self.path, f"no resolution (µm/px) in the slide metadata; {how}")
        return self._mpp

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed `downsample` (so we only ever shrink)."""
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + _LEVEL_TOLERANCE) and ds >= self.level_downsamples[best]:
                best = level
        return best

    def read_region(self, location: tuple[int, int], size: tuple[int, int], mpp: float) -> np.ndarray:
        """RGB uint8 (h, w, 3) of `size` output pixels at `mpp` µm/px, top-left at level-0 `location`.

        Parts outside the slide are white. One resampling at most: none when `mpp` matches a level.
        """
        return self.read_region_at(location, size, mpp / self.mpp)

    def read_region_at(self, location: tuple[int, int], size: tuple[int, int], downsample: float) -> np.ndarray:
        """`read_region` with the scale given as a downsample from level 0 (needs no mpp)."""
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"region size must be positive, got {size}")
        level = self.best_level(downsample)
        level_ds = self.level_downsamples[level]
        x_l, y_l = location[0] / level_ds, location[1] / level_ds
        scale = downsample / level_ds  # output px -> level px
        if abs(scale - 1.0) <= _LEVEL_TOLERANCE:
            return self._read(level, int(round(x_l)), int(round(y_l)), w, h)
        x0, y0 = int(math.floor(x_l)), int(math.floor(y_l))
        w_l = max(1, int(math.ceil(x_l + w * scale)) - x0)
        h_l = max(1, int(math.ceil(y_l + h * scale)) - y0)
        pixels = self._read(level, x0, y0, w_l, h_l)
        interp = cv2.INTER_AREA if scale > 1 else cv2.INTER_LINEAR
        return cv2.resize(pixels, (w, h), interpolation=interp)

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        cached = self._level_cache.get(level)
        if cached is not None:
            out = np.full((h, w, 3), 255, np.uint8)
            _paste(out, cached, -x, -y)
            return out
        try:
            return self._backend.read(level, x, y, w, h)
        except InputError:
            raise
        except Exception as exc:  # decoder errors on truncated/corrupt tiles
            raise InputError(
                self.path, f"corrupt slide data at level {level} ({clip(str(exc), 120) or type(exc).__name__})"
            ) from None

    def thumbnail(self, max_size: int = 2048) -> tuple[np.ndarray, float]:
        """The whole slide scaled so its longer side is at most `max_size`; returns (RGB, downsample vs level 0)."""
        w0, h0 = self.dimensions
        downsample = max(1.0, max(w0, h0) / max_size)
        tw, th = max(1, int(round(w0 / downsample))), max(1, int(round(h0 / downsample)))
        return self._scaled(downsample, tw, th)

    def tissue_thumbnail(self, max_size: int = 2048) -> tuple[np.ndarray, float]:
        """The image tissue is detected on: the slide reduced by the smallest power of two that brings its longer
        side to at most `max_size`; returns (RGB, downsample vs level 0).

        A pyramid level at that power of two is taken as stored; otherwise the nearest finer level is reduced once
        (area averaging) to ``level-0 size // 2^k``. So the same level-0 pixels give the same mask with and without a
        pyramid whose levels are area averages of level 0, and no mask is resampled twice, which a thumbnail of
        arbitrary size is (level -> thumbnail after level 0 -> level): that double blur moved the Otsu threshold and
        the kept tiles. A pyramid whose levels were made otherwise (JPEG-compressed, another filter) still gives
        its own level's mask: 411 tiles on an IDC slide vs 394 on its level 0 stored flat."""
        w0, h0 = self.dimensions
        scale = 1
        while max(w0, h0) > scale * max_size:
            scale *= 2
        level = self.best_level(scale)
        if abs(self.level_downsamples[level] / scale - 1.0) <= _LEVEL_TOLERANCE:
            lw, lh = self.level_dimensions[level]
            return self._scaled(self.level_downsamples[level], lw, lh)
        return self._scaled(float(scale), max(1, w0 // scale), max(1, h0 // scale))

    def _scaled(self, downsample: float, tw: int, th: int) -> tuple[np.ndarray, float]:
        """The whole slide as a `tw` x `th` image at about `downsample`; returns (RGB, level-0 px per pixel in x)."""
        w0, h0 = self.dimensions
        level = self.best_level(downsample)
        lw, lh = self.level_dimensions[level]
        if self.level_downsamples[level] < downsample / 2 and level not in self._level_cache:
            # No pyramid level near this size (e.g. a one-level SVS): the scanner's own overview image, when it is
            # at least as large as asked and has the slide's aspect ratio, saves decoding the whole slide.
            overview = self._overview()
            if overview is not None and overview.shape[1] >= tw and overview.shape[0] >= th and abs(
                    overview.shape[1] / overview.shape[0] - w0 / h0) < 0.01 * w0 / h0:
                return cv2.resize(overview, (tw, th), interpolation=cv2.INTER_AREA), w0 / tw
        if level not in self._level_cache:
            # A thumbnail of a slide without a level near its size holds a whole level as RGB: over the decode
            # budget that would be an out-of-memory kill, so the slide is refused with a way out instead.
            check_decode(self.path, f"an overview (no pyramid level small enough; the nearest is {lw} x {lh} px)",
                         lw * lh * 3)
        if lw * lh <= KEEP_LEVEL_MAX_PX and level not in self._level_cache:
            # The thumbnail decodes this whole level anyway: keep it, so later region reads at this level (e.g.
            # extraction from a one-level slide) do not decode the same tiles a second time.
            self._level_cache[level] = self._read(level, 0, 0, lw, lh)
        if level in self._level_cache:  # the whole level is in memory: one resize, no padding arithmetic
            full = self._level_cache[level]
            thumb = full if (tw, th) == (lw, lh) else cv2.resize(full, (tw, th), interpolation=cv2.INTER_AREA)
        else:
            thumb = self.read_region_at((0, 0), (tw, th), downsample)
        return thumb, w0 / tw

    def _overview(self) -> np.ndarray | None:
        try:
            return self._backend.overview()
        except Exception:  # a broken associated image must not stop reading the slide itself
            return None

    def close(self) -> None:
        self._level_cache.clear()
        self._backend.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Slide({self.path.name!r}, backend={self.backend}, vendor={self.vendor}, dims={self.dimensions}, "
                f"levels={self.level_count}, mpp={self._mpp})")


def open_slide(path: str | Path, mpp: float | None = None, reader: str | None = None,
               mpp_option: str | None = None) -> Slide:
    """Open a slide with the right backend; `mpp` overrides the metadata resolution. Use as a context manager.

    `reader="openslide"` forces OpenSlide for pixels where it can read the file (default: fastest exact reader).
    `mpp_option` is the command's option for `mpp` (e.g. "--slide-mpp"), named by a missing or bad resolution error.
    """
    return Slide(path, mpp=mpp, reader=reader, mpp_option=mpp_option)
