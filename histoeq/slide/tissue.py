"""Tissue detection on a thumbnail, and the tissue fraction of level-0 rectangles.

Convention of TIAToolbox / WSInfer: H&E tissue is coloured, glass and background are grey/white, so Otsu's threshold
on HSV saturation separates them; small specks (dust, pen noise) are removed and small holes (fat vacuoles, lumina)
filled so a tile's tissue fraction reflects the tissue region rather than pixel-level staining.
"""

from __future__ import annotations

import cv2  # opencv-python-headless (albumentations' dependency): fast RGB->HSV
import numpy as np
from scipy import ndimage

# Saturation (0..1) below which nothing counts as tissue: on a blank slide Otsu would otherwise split JPEG noise.
MIN_SATURATION_THRESHOLD = 0.05


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values: pixels > threshold are foreground.

    (scikit-image is not a dependency; this is its 10-line core on a 256-bin histogram.)
    """
    hist = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    return int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2))


def _remove_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def tissue_mask(thumb_rgb: np.ndarray, min_object_fraction: float = 2e-4, max_hole_fraction: float = 1e-3
                ) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail.

    Objects smaller than `min_object_fraction` of the thumbnail are dropped, holes smaller than `max_hole_fraction`
    filled (fractions, so the clean-up means the same at any thumbnail size).
    """
    hsv = cv2.cvtColor(np.ascontiguousarray(thumb_rgb, dtype=np.uint8), cv2.COLOR_RGB2HSV)
    sat = hsv[:, :, 1]
    dark = hsv[:, :, 2] < 30  # black borders / scanner padding are not tissue
    values = sat[~dark]
    if values.size == 0:
        return np.zeros(sat.shape, bool)
    threshold = max(otsu_threshold(values), MIN_SATURATION_THRESHOLD * 255)
    mask = (sat > threshold) & ~dark
    area = mask.size
    if min(mask.shape) >= 16:  # a 3x3 opening removes single-pixel noise before object sizes are judged
        mask = cv2.morphologyEx(mask.view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
    mask = _remove_small(mask, max(1, int(min_object_fraction * area)))
    holes = ~mask & ~_remove_small(~mask, max(1, int(max_hole_fraction * area)))
    return mask | holes


def tissue_fraction(mask: np.ndarray, downsample: float, rects: np.ndarray) -> np.ndarray:
    """Fraction of each level-0 rectangle (rows x, y, w, h) covered by `mask` (made at `downsample` vs level 0).

    Exact area weighting: the integral image of a piecewise-constant mask is bilinear inside each cell, so
    bilinear interpolation of the summed-area table gives the covered area of any real-valued rectangle.
    """
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    h, w = mask.shape
    sat = np.zeros((h + 1, w + 1))
    sat[1:, 1:] = np.cumsum(np.cumsum(mask, axis=0, dtype=np.float64), axis=1)

    def integral(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        u, v = np.clip(u, 0, w), np.clip(v, 0, h)
        u0, v0 = np.minimum(np.floor(u).astype(int), w - 1), np.minimum(np.floor(v).astype(int), h - 1)
        fu, fv = u - u0, v - v0
        return (sat[v0, u0] * (1 - fu) * (1 - fv) + sat[v0, u0 + 1] * fu * (1 - fv)
                + sat[v0 + 1, u0] * (1 - fu) * fv + sat[v0 + 1, u0 + 1] * fu * fv)

    x0, y0 = rects[:, 0] / downsample, rects[:, 1] / downsample
    x1, y1 = (rects[:, 0] + rects[:, 2]) / downsample, (rects[:, 1] + rects[:, 3]) / downsample
    covered = integral(x1, y1) - integral(x0, y1) - integral(x1, y0) + integral(x0, y0)
    area = (x1 - x0) * (y1 - y0)
    return np.divide(covered, area, out=np.zeros_like(covered), where=area > 0)


# A thumbnail pixel this bright (HSV value) with no colour is glass or background.
BACKGROUND_VALUE = 220


def no_tissue_reason(thumb_rgb: np.ndarray) -> str:
    """Why `tissue_mask` found nothing, for the user: tissue is told from glass by its stain colour, so a slide
    without colour (a greyscale scan, an unstained or fluorescence channel) has no tissue by this rule even when
    its image shows structure; say so rather than only 'no tissue'."""
    hsv = cv2.cvtColor(np.ascontiguousarray(thumb_rgb, dtype=np.uint8), cv2.COLOR_RGB2HSV)
    value = hsv[:, :, 2]
    lit = value >= 30
    colourless = not (hsv[:, :, 1][lit] > MIN_SATURATION_THRESHOLD * 255).any()
    content = (lit & (value < BACKGROUND_VALUE)).mean() > 0.01
    if colourless and content:
        return ("the slide is greyscale (no pixel has colour), and tissue is found by its stain colour; "
                "--min-tissue 0 keeps all tiles")
    if not content:
        return "the slide looks blank (only background or black); --min-tissue 0 keeps all tiles"
    return "the tissue mask is empty; --min-tissue 0 keeps all tiles"
