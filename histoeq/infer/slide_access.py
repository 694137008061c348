"""Open slides for inference through `histoeq.slide` (the project's reader), with a thin private fallback.

The fallback exists only so that inference works and is tested while `histoeq.slide` is being written; it is the
minimum `predict` needs (OpenSlide, level choice, resampling to the model's µm/px, a tissue mask by colour) and is
used only when `histoeq.slide.open_slide` cannot be imported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from histoeq.errors import InputError


class SlideLike(Protocol):
    dimensions: tuple[int, int]
    mpp: float

    def read_region(self, location: tuple[int, int], size: tuple[int, int], mpp: float) -> np.ndarray: ...

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]: ...


def open_for_inference(path: str | Path, mpp: float | None = None) -> Any:
    """A slide object with the `histoeq.slide` API (read_region in level-0 location, output size, µm/px)."""
    try:
        from histoeq.slide import open_slide  # type: ignore[attr-defined]
    except ImportError:
        return _OpenSlideFallback(Path(path), mpp)
    return open_slide(path, mpp=mpp)


def tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """`histoeq.slide.tissue.tissue_mask` when present, else: not white-ish and not grey (H&E is coloured)."""
    try:
        from histoeq.slide.tissue import tissue_mask as project_mask  # type: ignore[import-not-found]
    except ImportError:
        rgb = thumb.astype(np.int16)
        saturation = rgb.max(axis=2) - rgb.min(axis=2)
        return (saturation > 15) & (rgb.mean(axis=2) < 235)
    return np.asarray(project_mask(thumb), dtype=bool)


class _OpenSlideFallback:
    """Minimal OpenSlide reader with the `histoeq.slide.Slide` surface used by inference."""

    backend = "openslide"

    def __init__(self, path: Path, mpp: float | None) -> None:
        import openslide

        if not path.is_file():
            raise InputError(path, "slide not found")
        if path.stat().st_size == 0:
            raise InputError(path, "not a readable slide (zero-byte file)")
        try:
            self._slide = openslide.OpenSlide(str(path))
        except Exception as exc:
            raise InputError(path, f"not a readable slide ({type(exc).__name__}: {str(exc)[:100]})") from None
        self.path = path
        self.vendor = self._slide.properties.get("openslide.vendor", "unknown")
        self.dimensions = self._slide.dimensions
        self.level_dimensions = self._slide.level_dimensions
        self.level_downsamples = self._slide.level_downsamples
        if mpp is None:
            value = self._slide.properties.get("openslide.mpp-x")
            if value is None:
                raise InputError(path, "slide has no µm/px in its metadata; pass --mpp")
            mpp = float(value)
        self.mpp = float(mpp)

    def read_region(self, location: tuple[int, int], size: tuple[int, int], mpp: float) -> np.ndarray:
        scale = mpp / self.mpp  # level-0 px per output px
        level = self._slide.get_best_level_for_downsample(scale + 1e-6)
        ds = self.level_downsamples[level]
        read = (max(1, math.ceil(size[0] * scale / ds)), max(1, math.ceil(size[1] * scale / ds)))
        try:
            region = self._slide.read_region((int(location[0]), int(location[1])), level, read)
        except Exception as exc:
            raise InputError(self.path, f"unreadable region at {location} ({str(exc)[:100]})") from None
        white = Image.new("RGB", region.size, (255, 255, 255))
        white.paste(region, mask=region.getchannel("A"))
        if white.size != tuple(size):
            white = white.resize(tuple(size), Image.BILINEAR)
        return np.asarray(white)

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        try:
            thumb = self._slide.get_thumbnail((max_size, max_size)).convert("RGB")
        except Exception as exc:
            raise InputError(self.path, f"unreadable slide ({str(exc)[:100]})") from None
        return np.asarray(thumb), self.dimensions[0] / thumb.size[0]
