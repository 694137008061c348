"""Group convolutions as ordinary ``conv2d`` over an expanded filter bank.

Feature maps on a group G are plain 4-D tensors (B, C·|G|, H, W), channel ``c·|G| + g`` holding orientation g of
field c, so every layer runs as one ``F.conv2d`` at the cost of a plain convolution of the expanded width. The
filter bank is built from the parameters on every training step (a few small matmuls) and, in eval mode with
autograd off, built once and cached until the weights change or ``train()`` is called.

Conventions (checked by the tests): with ``T_g`` the action of g on a filter (``histoeq.nn.kernels``),
``LiftingConv2d`` uses filter ``T_g ψ`` for output orientation g; ``GroupConv2d`` uses ``T_g ψ(·, g^{-1}h)`` between
input orientation h and output orientation g. Rotating the input by u then rotates every output map by u and
permutes the group axis by the regular representation of u.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from histoeq.nn.groups import Group
from histoeq.nn.kernels import kernel_transforms


class _ExpandedConv(nn.Module):
    """Shared machinery: parameter → filter-bank expansion, eval-mode cache, export to ``nn.Conv2d``."""

    weight: nn.Parameter
    transforms: torch.Tensor

    def __init__(self, group: Group, kernel_size: int, padding: int, method: str, bias: bool, out_channels: int):
        super().__init__()
        self.group = group
        self.kernel_size = kernel_size
        self.padding = padding
        self.method = method
        self.out_channels = out_channels
        self.register_buffer(
            "transforms", torch.as_tensor(kernel_transforms(group, kernel_size, method), dtype=torch.float32),
            persistent=False,
        )
        # One bias per field, shared over the group axis (a per-orientation bias would break equivariance).
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._cache: tuple[tuple[int, ...], torch.Tensor, torch.Tensor | None] | None = None

    @property
    def n_params(self) -> int:
        return self.transforms.shape[-1]

    def _init_weight(self, fan_in: float) -> None:
        # He init on the effective filter: parameters are scaled so that each expanded filter pixel has the
        # variance of a plain conv's (the transforms are near-orthonormal on the disk).
        std = math.sqrt(2.0 / fan_in) * math.sqrt(self.kernel_size**2 / self.n_params)
        nn.init.normal_(self.weight, 0.0, std)

    def expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The expanded (weight, bias) for ``F.conv2d``."""
        raise NotImplementedError

    def _expanded_bias(self) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.repeat_interleave(self.group.order)

    def filter_bank(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Expanded filters, cached while in eval mode with autograd off."""
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self.expand()
        key = tuple((p._version, p.data_ptr()) for p in self.parameters()) + (self.transforms.data_ptr(),)
        if self._cache is None or self._cache[0] != key:
            weight, bias = self.expand()
            self._cache = (key, weight, bias)
        return self._cache[1], self._cache[2]

    def train(self, mode: bool = True) -> "_ExpandedConv":
        self._cache = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.filter_bank()
        return F.conv2d(x, weight, bias, padding=self.padding)

    @torch.no_grad()
    def to_plain(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` computing exactly this layer."""
        weight, bias = self.expand()
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], self.kernel_size, padding=self.padding, bias=bias is not None)
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv


class LiftingConv2d(_ExpandedConv):
    """Z² → G: a plain image to feature maps on the group (one filter copy per group element)."""

    def __init__(self, in_channels: int, out_channels: int, group: Group, kernel_size: int, padding: int = 0,
                 method: str = "pixel", bias: bool = False) -> None:
        super().__init__(group, kernel_size, padding, method, bias, out_channels)
        self.in_channels = in_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, self.n_params))
        # (P, G·k²): a filter's parameters to its |G| transformed copies, one GEMM per expansion.
        self.register_buffer("expansion", self.transforms.permute(2, 0, 1).reshape(self.n_params, -1).contiguous(),
                             persistent=False)
        self._init_weight(in_channels * kernel_size**2)

    def expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        k, n = self.kernel_size, self.group.order
        o, i = self.out_channels, self.in_channels
        bank = (self.weight.reshape(o * i, -1) @ self.expansion).reshape(o, i, n, k, k)  # (O, I, G, k, k)
        return bank.transpose(1, 2).reshape(o * n, i, k, k), self._expanded_bias()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, group={self.group.name}, k={self.kernel_size}, {self.method}"


class GroupConv2d(_ExpandedConv):
    """G → G: filters transformed in the plane by g and cyclically permuted along the input group axis."""

    def __init__(self, in_channels: int, out_channels: int, group: Group, kernel_size: int, padding: int = 0,
                 method: str = "pixel", bias: bool = False) -> None:
        super().__init__(group, kernel_size, padding, method, bias, out_channels)
        self.in_channels = in_channels
        n = group.order
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, n, self.n_params))
        # The whole expansion (permutation g^{-1}h along the group axis, then the plane transform of element g) is
        # one fixed linear map from a filter's (G_in, P) parameters to its (G_out, G_in, k²) expanded copies, so the
        # filter bank is one small GEMM per step (and one in the backward pass) instead of a gather and an einsum.
        k2 = kernel_size**2
        source = torch.as_tensor(group.cayley[group.inverse], dtype=torch.long)  # [g, h] = g^{-1} h
        expansion = torch.zeros(n, self.n_params, n, n, k2)
        for g in range(n):
            for h in range(n):
                expansion[source[g, h], :, g, h, :] = self.transforms[g].T
        self.register_buffer("expansion", expansion.reshape(n * self.n_params, n * n * k2), persistent=False)
        self._init_weight(in_channels * n * kernel_size**2)

    def expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        k, n = self.kernel_size, self.group.order
        o, i = self.out_channels, self.in_channels
        bank = (self.weight.reshape(o * i, -1) @ self.expansion).reshape(o, i, n, n, k, k)  # (O, I, G_out, G_in, k, k)
        return bank.transpose(1, 2).reshape(o * n, i * n, k, k), self._expanded_bias()

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, group={self.group.name}, k={self.kernel_size}, {self.method}"
