"""The transformed views a model is evaluated on: rotations by k * 360/N degrees, optionally after a mirror.

Multiples of 90 degrees and mirrors are exact pixel permutations (`torch.rot90` / `torch.flip`, no interpolation),
so a D4-invariant model must give identical outputs on them. Other angles need interpolation and the tile's corners
need pixels from outside the tile: we rotate a larger *context* square centred on the tile and crop the centre. The
context comes from the slide when it is reachable (real tissue around the patch) and otherwise from reflect-padding
the tile (which the evaluation report says, as it is a small artefact of its own).

The views of ``--rotations N [--flips]`` are the elements of C_N (D_N), in the group's index order, acting as
`histoeq.nn.actions` says (the convention training augmentation and export share): mirror the width axis first,
then rotate counter-clockwise as displayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from histoeq.nn.actions import D4, degrees, rotate_image, transform_image
from histoeq.nn.groups import Group


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
    def d4_element(self) -> int:
        """The element of D4 (`histoeq.nn.actions.D4`) an exact view is."""
        return D4.index(self.quarter_turns, int(self.mirrored))

    @property
    def name(self) -> str:
        return f"{'m' if self.mirrored else ''}{self.angle:g}"


def make_views(rotations: int, flips: bool) -> list[View]:
    """The elements of C_N, or D_N with `flips` (angles k * 360/N, then the same mirrored); identity first."""
    if rotations < 1:
        raise ValueError(f"rotations must be at least 1, got {rotations}")
    group = Group(rotations, flips)
    return [View(degrees(group, g), group.is_mirrored(g)) for g in range(group.order)]


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
    return transform_image(tiles.permute(0, 3, 1, 2), D4, view.d4_element).permute(0, 2, 3, 1).contiguous()


def rotate_context(context: torch.Tensor, view: View, tile_px: int) -> torch.Tensor:
    """Rotate uint8 (B,S,S,3) context squares about their centre (bilinear) and crop the central tile_px square."""
    x = context.permute(0, 3, 1, 2).float()
    if view.mirrored:
        x = x.flip(-1)
    out = rotate_image(x, view.angle, padding_mode="reflection")
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
