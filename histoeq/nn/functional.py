"""The group's action on images and on feature maps, for tests, evaluation and augmentation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from histoeq.nn.groups import Group


def transform_image(x: torch.Tensor, group: Group, element: int) -> torch.Tensor:
    """Apply a 90°-multiple / mirror element to (…, H, W) exactly: flip (if mirrored), then rotate."""
    if group.is_mirrored(element):
        x = torch.flip(x, dims=(-1,))
    k = group.quarter_turns(element)
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


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

    Multiples of 90° are delegated to ``torch.rot90`` so they stay exact.
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
