"""The transformed views a model is evaluated on: rotations by k * 360/N degrees, optionally after a mirror.

Multiples of 90 degrees and mirrors are exact pixel permutations (`torch.rot90` / `torch.flip`, no interpolation),
so a D4-invariant model must give identical outputs on them. Other angles need interpolation and the tile's corners
need pixels from outside the tile: we rotate a larger *context* square centred on the tile and crop the centre. The
context comes from the slide when it is reachable (real tissue around the patch) and otherwise from reflect-padding
the tile (which the evaluation report says, as it is a small artefact of its own).

Conventions shared with training augmentation (`histoeq.train.batches`): a view is (angle, mirrored); the mirror
(a flip of the width axis) is applied first, then a counter-clockwise rotation, the same direction as
``torch.rot90(x, k, dims=(H, W))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class View:
    angle: float  # degrees, counter-clockwise
    mirrored: bool = False

    @property
    def exact(self) -> bool:
        """90-degree multiples (with or without mirror) are pixel permutations."""
        return math.isclose(self.angle % 90.0, 0.0, abs_tol=1e-9) or math.isclose(self.angle % 90.0, 90.0,
                                                                                   abs_tol=1e-9)

    @property
    def quarter_turns(self) -> int:
        return int(round(self.angle / 90.0)) % 4

    @property
    def name(self) -> str:
        return f"{'m' if self.mirrored else ''}{self.angle:g}"


def make_views(rotations: int, flips: bool) -> list[View]:
    """N angles k * 360/N (k = 0..N-1), each also mirrored when `flips`; identity first."""
    if rotations < 1:
        raise ValueError(f"rotations must be at least 1, got {rotations}")
    angles = [k * 360.0 / rotations for k in range(rotations)]
    views = [View(a, False) for a in angles]
    if flips:
        views += [View(a, True) for a in angles]
    return views


def context_size(tile_px: int) -> int:
    """Side of the square whose centre crop stays inside it under any rotation: tile * sqrt(2), rounded up, plus a
    one-pixel margin for bilinear interpolation, with the same parity as the tile so the centre is shared."""
    side = int(math.ceil(tile_px * math.sqrt(2.0))) + 2
    return side + ((side - tile_px) % 2)


def reflect_context(tiles: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B,H,W,3) tiles -> uint8 (B,size,size,3) by reflect padding (the fallback without a slide)."""
    pad = (size - tiles.shape[1]) // 2
    x = tiles.permute(0, 3, 1, 2).float()
    while pad > 0:  # F.pad's reflect needs pad < size; pad in steps for very small tiles
        step = min(pad, x.shape[-1] - 1)
        x = F.pad(x, (step, step, step, step), mode="reflect")
        pad -= step
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def exact_view(tiles: torch.Tensor, view: View) -> torch.Tensor:
    """uint8 (B,H,W,3) -> the view, by pixel permutation only (requires `view.exact`)."""
    x = tiles.flip(2) if view.mirrored else tiles
    return torch.rot90(x, view.quarter_turns, dims=(1, 2)).contiguous()


def rotate_context(context: torch.Tensor, view: View, tile_px: int) -> torch.Tensor:
    """Rotate uint8 (B,S,S,3) context squares about their centre (bilinear) and crop the central tile_px square."""
    x = context.flip(2) if view.mirrored else context
    x = x.permute(0, 3, 1, 2).float()
    theta = math.radians(view.angle)
    c, s = math.cos(theta), math.sin(theta)
    # affine_grid maps output coordinates to input coordinates (x right, y down). A counter-clockwise rotation of
    # the image as torch.rot90 does on (H, W) (checked against it in the tests) samples the input at R(-theta).
    matrix = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=torch.float32).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    off = (out.shape[-1] - tile_px) // 2
    out = out[:, :, off:off + tile_px, off:off + tile_px]
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def apply_view(tiles: torch.Tensor, view: View, context: torch.Tensor | None = None) -> torch.Tensor:
    """The view of uint8 (B,H,W,3) tiles: exact for 90-degree multiples, else rotated from `context` (reflect
    padding of the tiles when None)."""
    if view.exact:
        return exact_view(tiles, view)
    if context is None:
        context = reflect_context(tiles, context_size(tiles.shape[1]))
    return rotate_context(context, view, tiles.shape[1])


def as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    return images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
