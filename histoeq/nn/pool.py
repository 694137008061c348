"""Pooling that keeps equivariance: over space (parity-aware) and over the group axis (projection)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def parity_pool_args(size: int) -> tuple[int, int]:
    """(kernel, padding) of a stride-2 pool that is symmetric under flips of an axis of this length.

    A 2×2/stride-2 window grid is mirror-symmetric only on even lengths (50→25 is fine, 25→12 is not); on odd
    lengths a 3×3/stride-2 window with padding 1 is (its windows are centred on 0, 2, …, size−1). Choosing per
    axis keeps 90° rotations and flips exact at every tile size, not only at sizes divisible by 2^depth.
    """
    return (2, 0) if size % 2 == 0 else (3, 1)


def binomial_filter(size: int) -> torch.Tensor:
    """Normalised 1-D binomial filter ([1,2,1] for 3, [1,3,3,1] for 4)."""
    row = torch.tensor([1.0])
    for _ in range(size - 1):
        row = torch.nn.functional.pad(row, (0, 1)) + torch.nn.functional.pad(row, (1, 0))
    return row / row.sum()


def blur_downsample(x: torch.Tensor) -> torch.Tensor:
    """Anti-aliased stride-2 subsampling (Zhang 2019) with a mirror-symmetric window per axis: binomial-3 with
    padding 1 on odd lengths, binomial-4 with padding 1 on even ones (windows centred on 0.5, 2.5, …)."""
    c = x.shape[1]
    kh = 3 if x.shape[-2] % 2 else 4
    kw = 3 if x.shape[-1] % 2 else 4
    kernel = binomial_filter(kh).to(x)[:, None] * binomial_filter(kw).to(x)[None, :]
    return F.conv2d(x, kernel.expand(c, 1, kh, kw), stride=2, padding=1, groups=c)


class EquivariantPool2d(nn.Module):
    """Stride-2 spatial pooling whose windows are mirror-symmetric at every input size.

    ``max``/``avg`` use :func:`parity_pool_args`; ``blur`` is anti-aliased (binomial) subsampling, which also
    keeps the non-90° rotations of C_N closer to equivariant.
    """

    def __init__(self, mode: str = "max") -> None:
        super().__init__()
        if mode not in ("max", "avg", "blur"):
            raise ValueError("mode must be 'max', 'avg' or 'blur'")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "blur":
            return blur_downsample(x)
        (kh, ph), (kw, pw) = parity_pool_args(x.shape[-2]), parity_pool_args(x.shape[-1])
        if self.mode == "max":
            return F.max_pool2d(x, (kh, kw), 2, (ph, pw))
        return F.avg_pool2d(x, (kh, kw), 2, (ph, pw), count_include_pad=False)

    @torch.no_grad()
    def to_plain(self, height: int, width: int, channels: int) -> nn.Module:
        """The fixed standard module this layer applies at an input of channels×height×width."""
        if self.mode == "blur":
            kh, kw = (3 if height % 2 else 4), (3 if width % 2 else 4)
            conv = nn.Conv2d(channels, channels, (kh, kw), stride=2, padding=1, groups=channels, bias=False)
            kernel = binomial_filter(kh)[:, None] * binomial_filter(kw)[None, :]
            conv.weight.copy_(kernel.expand(channels, 1, kh, kw))
            return conv
        (kh, ph), (kw, pw) = parity_pool_args(height), parity_pool_args(width)
        if self.mode == "max":
            return nn.MaxPool2d((kh, kw), 2, (ph, pw))
        return nn.AvgPool2d((kh, kw), 2, (ph, pw), count_include_pad=False)

    def extra_repr(self) -> str:
        return self.mode


class GroupPool(nn.Module):
    """Projection G → Z²: max or mean over the |G| orientations of every field (invariant to the group axis)."""

    def __init__(self, group_order: int, mode: str = "max") -> None:
        super().__init__()
        if mode not in ("max", "mean"):
            raise ValueError("mode must be 'max' or 'mean'")
        self.group_order = group_order
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, cg, h, w = x.shape
        y = x.reshape(b, cg // self.group_order, self.group_order, h, w)
        return y.amax(dim=2) if self.mode == "max" else y.mean(dim=2)

    def extra_repr(self) -> str:
        return f"group_order={self.group_order}, {self.mode}"
