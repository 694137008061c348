"""The action of a `Group` on images and on feature maps: the one place that says how an element moves pixels.

Convention (the one `Group.cayley` composes): element ``r^k m^j`` first mirrors the image ``j`` times (a flip of
the width axis, left-right as displayed), then turns it ``k`` steps of ``360/N`` degrees counter-clockwise as
displayed, the direction of ``torch.rot90(x, 1, dims=(H, W))`` and ``np.rot90``. So
``transform_image(transform_image(x, h), g) == transform_image(x, g·h)`` with ``g·h = group.cayley[g, h]``.

Elements that map the pixel grid onto itself (90° multiples, mirrors) act exactly, by `rot90` / `flip`; they form
the subgroup `exact_subgroup`. The others (C8, C16 angles) need interpolation: `rotate_image` is the one
interpolating rotation, used for evaluation views and for the 45° equivariance protocol.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from histoeq.nn.groups import Group, dihedral

D4 = dihedral(4)  # the symmetries of the square pixel grid


def exact_subgroup(group: Group) -> Group:
    """The elements of `group` that map the pixel grid onto itself, as a group: C_gcd(N, 4), or D_gcd(N, 4) when
    `group` has mirrors. An element ``(k, j)`` of it is the element ``(k · N / gcd(N, 4), j)`` of `group`."""
    return Group(math.gcd(group.rotations, 4), group.mirrors)


def element_in(group: Group, other: Group, element: int) -> int | None:
    """Index in `group` of `other`'s `element` (the same rotation angle and mirror), None if `group` lacks it."""
    k, j = other.element(element)
    if j and not group.mirrors:
        return None
    if (k * group.rotations) % other.rotations:
        return None
    return group.index(k * group.rotations // other.rotations, j)


def subgroup_elements(group: Group, sub: Group) -> list[int]:
    """Indices in `group` of the elements of its subgroup `sub`, in `sub`'s order."""
    found = []
    for h in range(sub.order):
        g = element_in(group, sub, h)
        if g is None:
            raise ValueError(f"{sub.name} is not a subgroup of {group.name}")
        found.append(g)
    return found


def degrees(group: Group, element: int) -> float:
    """Counter-clockwise rotation angle of an element in degrees."""
    return group.element(element)[0] * 360.0 / group.rotations


def transform_image(x: torch.Tensor, group: Group, element: int) -> torch.Tensor:
    """A grid-exact element acting on a channels-first tensor (…, H, W), e.g. NCHW: flip if mirrored, then rotate."""
    k = group.quarter_turns(element)
    if group.is_mirrored(element):
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def transform_array(x: np.ndarray, group: Group, element: int) -> np.ndarray:
    """A grid-exact element acting on a channels-last array (…, H, W, C), e.g. NHWC or HWC; a view, not a copy."""
    k = group.quarter_turns(element)
    if group.is_mirrored(element):
        x = np.flip(x, axis=-2)
    return np.rot90(x, k, axes=(-3, -2)) if k else x


def transform_feature_map(y: torch.Tensor, group: Group, element: int) -> torch.Tensor:
    """Act on a (B, C·|G|, H, W) map: move it in the plane and permute its group axis (regular rep.)."""
    b, cg, h, w = y.shape
    n = group.order
    moved = transform_image(y, group, element)
    moved = moved.reshape(b, cg // n, n, *moved.shape[-2:])
    perm = torch.as_tensor(group.regular_permutation(element), device=y.device)
    return moved[:, :, perm].reshape(b, cg, *moved.shape[-2:])


def rotate_image(x: torch.Tensor, angle_deg: float, padding_mode: str = "zeros") -> torch.Tensor:
    """Rotate (B, C, H, W) about the centre by any angle, bilinear, in the same sense as ``torch.rot90``.

    Multiples of 90° are delegated to ``torch.rot90`` so they stay exact. Pixels from outside the image come from
    `padding_mode` (grid_sample's: zeros, border, reflection).
    """
    quarter = angle_deg / 90.0
    if abs(quarter - round(quarter)) < 1e-9:
        return torch.rot90(x, int(round(quarter)) % 4, dims=(-2, -1))
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # affine_grid's theta maps each output (x=col, y=row) to the input point it samples; this sign turns the
    # same way as rot90 (tests compare 89.999° with rot90).
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
    theta = theta.unsqueeze(0).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)

