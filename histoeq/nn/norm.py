"""Batch normalisation for feature maps on a group."""

from __future__ import annotations

import torch
from torch import nn


class GroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm with one set of statistics and affine parameters per field, shared over its |G| orientations.

    Separate statistics per orientation would re-weight orientations differently and break equivariance; sharing
    them is a free reshape: (B, C·|G|, H, W) is viewed as (B, C, |G|·H, W).
    """

    def __init__(self, num_fields: int, group_order: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_fields, eps=eps, momentum=momentum)
        self.group_order = group_order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, cg, h, w = x.shape
        y = super().forward(x.reshape(b, cg // self.group_order, self.group_order * h, w))
        return y.reshape(b, cg, h, w)

    @torch.no_grad()
    def to_plain(self) -> nn.BatchNorm2d:
        """An eval-mode ``nn.BatchNorm2d`` over the expanded channels with the statistics repeated."""
        n = self.group_order
        bn = nn.BatchNorm2d(self.num_features * n, eps=self.eps, momentum=self.momentum)
        bn.running_mean.copy_(self.running_mean.repeat_interleave(n))
        bn.running_var.copy_(self.running_var.repeat_interleave(n))
        bn.weight.copy_(self.weight.repeat_interleave(n))
        bn.bias.copy_(self.bias.repeat_interleave(n))
        bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn.eval()


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold an eval-mode BatchNorm into the preceding convolution (one conv at inference)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused
