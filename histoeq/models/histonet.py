"""One architecture family for every model, so that CNN vs G-CNN comparisons differ only in the group.

Three stages of (conv-BN-ReLU) × 2 followed by an equivariant stride-2 pool (anti-aliased binomial "blur" pooling
by default), then projection over the group (mean), global average pooling over space, dropout and a linear head.
Blur pooling and the group mean were chosen over max pooling because they roughly halved the 45° error of se2 in
``histoeq bench equivariance`` (max/max vs blur/mean), at no cost to 90° exactness. With |G| = 1 it is a plain CNN;
otherwise the first convolution lifts to the group and the rest are group convolutions. Invariance holds exactly for the
group's 90°-multiple / mirror elements at every tile size (the pooling windows follow the parity of each axis, see
``histoeq.nn.pool``), and approximately for the other rotations of C_N.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from histoeq.nn.conv import GroupConv2d, LiftingConv2d, _ExpandedConv
from histoeq.nn.groups import Group
from histoeq.nn.norm import GroupBatchNorm2d, fuse_conv_bn
from histoeq.nn.pool import EquivariantPool2d, GroupPool


class ConvBNReLU(nn.Sequential):
    def __init__(self, conv: _ExpandedConv, group_order: int) -> None:
        super().__init__(conv, GroupBatchNorm2d(conv.out_channels, group_order), nn.ReLU(inplace=True))


class HistoNet(nn.Module):
    """The classifier behind every registered model (``histoeq.models.create``)."""

    def __init__(
        self,
        group: Group,
        widths: Sequence[int],
        kernel_sizes: Sequence[int] = (5, 3),
        method: str = "pixel",
        num_classes: int = 2,
        in_channels: int = 3,
        pool: str = "blur",
        group_pool: str = "mean",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.group = group
        n = group.order
        first_k, k = kernel_sizes
        blocks: list[nn.Module] = []
        channels = in_channels
        for stage, width in enumerate(widths):
            first = stage == 0
            kernel = first_k if first else k
            conv_a: _ExpandedConv
            if first:
                conv_a = LiftingConv2d(channels, width, group, kernel, kernel // 2, method)
            else:
                conv_a = GroupConv2d(channels, width, group, kernel, kernel // 2, method)
            blocks += [ConvBNReLU(conv_a, n), ConvBNReLU(GroupConv2d(width, width, group, k, k // 2, method), n)]
            blocks.append(EquivariantPool2d(pool))
            channels = width
        self.features = nn.Sequential(*blocks)
        self.group_pool = GroupPool(n, group_pool)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)
        self.num_classes = num_classes
        self.widths = tuple(widths)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Invariant features (B, C) after projection over the group and global average pooling."""
        return self.flatten(self.global_pool(self.group_pool(self.features(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))

    @torch.no_grad()
    def to_plain(self, tile_px: int | tuple[int, int] = 50, fuse_bn: bool = True,
                 factored: bool = False) -> nn.Sequential:
        """The same function as an eval-mode ``nn.Sequential`` of standard modules only (Conv2d, BatchNorm2d
        or fused convs, ReLU, MaxPool2d/AvgPool2d, a group max/mean, Linear), for export.

        Pool windows are fixed for ``tile_px`` (they depend on the parity of the feature-map size).
        ``factored`` keeps each convolution as parameters × expansion (`FactoredConv2d`, what export writes:
        a file near the parameter size) instead of the expanded ``nn.Conv2d``."""
        h, w = (tile_px, tile_px) if isinstance(tile_px, int) else tile_px
        layers: list[nn.Module] = []
        channels = 0
        for block in self.features:
            if isinstance(block, ConvBNReLU):
                conv, bn, _ = block
                channels = conv.out_channels * self.group.order
                if factored and fuse_bn:
                    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                    layers.append(conv.to_factored(scale, bn.bias - bn.running_mean * scale))
                elif factored:
                    layers += [conv.to_factored(), bn.to_plain()]
                else:
                    plain_conv, plain_bn = conv.to_plain(), bn.to_plain()
                    layers += [fuse_conv_bn(plain_conv, plain_bn)] if fuse_bn else [plain_conv, plain_bn]
                layers.append(nn.ReLU())
            else:
                layers.append(block.to_plain(h, w, channels))
                h, w = (h + 1) // 2, (w + 1) // 2
        layers += [GroupPool(self.group.order, self.group_pool.mode), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        head = nn.Linear(self.head.in_features, self.head.out_features)
        head.load_state_dict(self.head.state_dict())
        layers.append(head)
        return nn.Sequential(*layers).eval().to(next(self.parameters()).device)
