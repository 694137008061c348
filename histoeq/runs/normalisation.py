"""uint8 tiles to the float input a model was trained on, with the per-channel mean/std its checkpoint carries.

Training batches and evaluation predictors both normalise here, so a model sees the same numbers in both.
"""

from __future__ import annotations

import torch


def normalise(batch_uint8_nhwc: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) with the dataset's per-channel mean/std ([0, 1] units).

    Written as one scale-and-shift on a contiguous NCHW copy: (x/255 - mean)/std = x * (1/(255 std)) - mean/std."""
    x = batch_uint8_nhwc.permute(0, 3, 1, 2).contiguous().float()
    return x.mul_((1.0 / (255.0 * std)).view(1, -1, 1, 1)).sub_((mean / std).view(1, -1, 1, 1))


def normalise_planar(batch_uint8_nchw: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float, x * scale - shift with per-channel (1,3,1,1) tensors (see `normalise`)."""
    return batch_uint8_nchw.float().mul_(scale).sub_(shift)
