"""Spatial context on a tile grid: each tile's value combined with its neighbours' through a D4-symmetric kernel.

Why: a 50 px tile sees less than a pathologist does; its neighbours carry the rest. The kernels are symmetric
under the 8 grid symmetries (rotations by 90 degrees, mirrors), and a missing neighbour (background, no tile) is
left out and the present weights renormalised, the same way under every symmetry, so a rotated or mirrored slide
gives exactly the rotated or mirrored result. Convolution is scipy.ndimage's on a dense grid of the tiles' bounding
box (value and presence convolved separately), on fixed-point integers, which is exact and fast for the grids of a
slide.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from histoeq.errors import HistoeqError

_BINOMIAL5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0])
KERNELS: dict[str, np.ndarray] = {
    "box3": np.ones((3, 3)),
    "binomial3": np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]),
    "binomial5": np.outer(_BINOMIAL5, _BINOMIAL5),
}
NO_CONTEXT = "none"
FIXED_ONE = 2**40  # values are summed as integer multiples of 2**-40 (|value| <= FIXED_RANGE)
FIXED_RANGE = 1024.0


def context_kernel(name: str) -> np.ndarray:
    """The named kernel (see `KERNELS`); unknown names raise `HistoeqError` listing the choices."""
    if name not in KERNELS:
        raise HistoeqError(f"unknown context kernel {name!r} (choose from {NO_CONTEXT}, {', '.join(KERNELS)})")
    return KERNELS[name]


def smooth_on_grid(x: np.ndarray, y: np.ndarray, values: np.ndarray, step: float, kernel: str) -> np.ndarray:
    """Each tile's value averaged with its grid neighbours' (tiles at ``x, y`` on a grid of pitch ``step``).

    Tiles must sit on one grid (x, y multiples of ``step`` from a common origin) and be unique; the result has
    the order of the input."""
    k = context_kernel(kernel)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    col = np.rint((x - x.min()) / step).astype(np.int64)
    row = np.rint((y - y.min()) / step).astype(np.int64)
    if not (np.allclose(col * step, x - x.min()) and np.allclose(row * step, y - y.min())):
        raise HistoeqError(f"tile positions are not on one grid of step {step:g}")
    shape = (int(row.max()) + 1, int(col.max()) + 1)
    if len(np.unique(row * shape[1] + col)) != len(values):
        raise HistoeqError("two tiles share one grid position")
    # Fixed-point integers make the sums exact, so their order (which a rotation of the grid changes) cannot
    # change the last bit: the rotated slide gives exactly the rotated result, not one within rounding.
    total = np.zeros(shape, dtype=np.int64)
    present = np.zeros(shape, dtype=np.int64)
    total[row, col] = np.rint(np.clip(values, -FIXED_RANGE, FIXED_RANGE) * FIXED_ONE).astype(np.int64)
    present[row, col] = 1
    weights = k.astype(np.int64)
    num = ndimage.convolve(total, weights, mode="constant", cval=0)
    den = ndimage.convolve(present, weights, mode="constant", cval=0)
    return num[row, col] / (den[row, col] * float(FIXED_ONE))


def smooth_by_group(table_x: np.ndarray, table_y: np.ndarray, values: np.ndarray, groups: np.ndarray,
                    step: float, kernel: str) -> np.ndarray:
    """`smooth_on_grid` within each group (one slide or patient each); ``kernel="none"`` returns the values."""
    values = np.asarray(values, dtype=np.float64)
    if kernel == NO_CONTEXT:
        return values.copy()
    out = np.empty_like(values)
    groups = np.asarray(groups)
    for g in np.unique(groups):
        sel = groups == g
        out[sel] = smooth_on_grid(np.asarray(table_x)[sel], np.asarray(table_y)[sel], values[sel], step, kernel)
    return out


def grid_step(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """The pitch of the tile grid: the greatest common divisor of every tile's offset from its group's first tile
    (integer positions, as in tile indices and IDC patch names). One pitch for all groups, so a sparse group
    cannot mistake tiles two steps apart for neighbours."""
    x, y, groups = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), np.asarray(groups)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.allclose(x, np.rint(x))
            and np.allclose(y, np.rint(y))):
        raise HistoeqError("tile positions x, y must be integers to place tiles on a grid")
    step = 0
    for g in np.unique(groups):
        sel = groups == g
        offsets = np.concatenate([np.rint(x[sel] - x[sel].min()), np.rint(y[sel] - y[sel].min())]).astype(np.int64)
        step = int(np.gcd.reduce(np.append(offsets, step)))
    return float(step) if step > 0 else 1.0
