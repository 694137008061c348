"""Group convolutions as ordinary ``conv2d`` over an expanded filter bank.

Feature maps on a group G are plain 4-D tensors (B, C·|G|, H, W), channel ``c·|G| + g`` holding orientation g of
field c, so every layer runs as one ``F.conv2d`` at the cost of a plain convolution of the expanded width. The
filter bank is built from the parameters on every training step (one small GEMM) and, in eval mode with
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
from histoeq.nn.kernels import kernel_transforms, legacy_steerable_change_of_basis


class _ExpandedConv(nn.Module):
    """Shared machinery: parameter → filter-bank expansion, eval-mode cache, export to ``nn.Conv2d``.

    Subclasses say how many input orientations a field has (``in_orientations``: 1 lifting, |G| group conv) and
    give the fixed linear map ``expansion`` from one filter's parameters to all its expanded copies; the bank is
    then one GEMM per expansion (and one in the backward pass)."""

    weight: nn.Parameter
    expansion: torch.Tensor
    in_orientations: int

    def __init__(self, in_channels: int, out_channels: int, group: Group, kernel_size: int, padding: int,
                 method: str, bias: bool) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.group = group
        self.kernel_size = kernel_size
        self.padding = padding
        self.method = method
        # (|G|, k², P): only needed to build the expansion, so it is not kept as a buffer.
        maps = torch.as_tensor(kernel_transforms(group, kernel_size, method), dtype=torch.float32)
        self.n_params = maps.shape[-1]
        self.register_buffer("expansion", self._expansion(maps), persistent=False)
        n_in = self.in_orientations
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, *((n_in,) if n_in > 1 else ()), self.n_params)
        )
        # He init on the effective filter: parameters are scaled so that each expanded filter pixel has the
        # variance of a plain conv's (the transforms are near-orthonormal on the disk).
        fan_in = in_channels * n_in * kernel_size**2
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_in) * math.sqrt(kernel_size**2 / self.n_params))
        # One bias per field, shared over the group axis (a per-orientation bias would break equivariance).
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._cache: tuple[tuple[int, ...], torch.Tensor, torch.Tensor | None] | None = None

    def _expansion(self, maps: torch.Tensor) -> torch.Tensor:
        """(in_orientations · P, |G| · in_orientations · k²) map from parameters to expanded copies."""
        raise NotImplementedError

    def expand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The expanded (weight, bias) for ``F.conv2d``: channel ``field·|G| + g`` on both sides."""
        k, n, o, i = self.kernel_size, self.group.order, self.out_channels, self.in_channels
        bank = (self.weight.reshape(o * i, -1) @ self.expansion).reshape(o, i, n, self.in_orientations, k, k)
        bias = None if self.bias is None else self.bias.repeat_interleave(n)
        return bank.transpose(1, 2).reshape(o * n, i * self.in_orientations, k, k), bias

    def filter_bank(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Expanded filters, cached while in eval mode with autograd off."""
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self.expand()
        key = tuple((p._version, p.data_ptr()) for p in self.parameters()) + (self.expansion.data_ptr(),)
        if self._cache is None or self._cache[0] != key:
            weight, bias = self.expand()
            self._cache = (key, weight, bias)
        return self._cache[1], self._cache[2]

    def train(self, mode: bool = True) -> _ExpandedConv:
        self._cache = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.filter_bank()
        return F.conv2d(x, weight, bias, padding=self.padding)

    @torch.no_grad()
    def to_plain(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` computing exactly this layer."""
        weight, bias = self.expand()
        conv = nn.Conv2d(weight.shape[1], weight.shape[0], self.kernel_size, padding=self.padding,
                         bias=bias is not None)
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
        return conv

    @torch.no_grad()
    def to_factored(self, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> FactoredConv2d:
        """This layer as `FactoredConv2d`, optionally with a per-field affine map (a folded BatchNorm) applied
        to its output: ``scale · conv(x) + shift``, scale and shift of shape (out_channels,)."""
        o, n = self.out_channels, self.group.order
        weight = self.weight.reshape(o, -1).clone()
        bias = self.weight.new_zeros(o) if self.bias is None else self.bias.clone()
        if scale is not None:
            weight, bias = weight * scale[:, None], bias * scale
        if shift is not None:
            bias = bias + shift
        shape = (o, self.in_channels, n, self.in_orientations, self.kernel_size, self.kernel_size)
        return FactoredConv2d(weight, self.expansion.clone(), bias.repeat_interleave(n), shape, self.padding)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, group={self.group.name}, k={self.kernel_size}, {self.method}"


class FactoredConv2d(nn.Module):
    """A group convolution for export, stored as its free parameters and the fixed expansion to the filter bank.

    The expanded bank of a D4 group conv holds |G|² copies of every parameter, so an exported ``nn.Conv2d`` is
    ~8× the size of the model's parameters (a p4m of 271k parameters made an 8.7 MB file). Kept factored, the
    graph builds the bank with one MatMul of two constants, which ONNX runtimes fold once when the session is
    created; the file stays near the parameter size. For exact (pixel) transforms the expansion is a 0/1
    matrix, so the bank is bit-identical to the expanded one.
    """

    def __init__(self, weight: torch.Tensor, expansion: torch.Tensor, bias: torch.Tensor,
                 shape: tuple[int, int, int, int, int, int], padding: int) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # (out fields, in fields · in orientations · P)
        self.register_buffer("expansion", expansion)  # (in orientations · P, |G| · in orientations · k²)
        self.register_buffer("bias", bias)  # (out fields · |G|,)
        self.shape = shape  # (o, i, |G|, in orientations, k, k)
        self.padding = padding

    def filter_bank(self) -> torch.Tensor:
        o, i, n, n_in, k, _ = self.shape
        rows = self.weight.reshape(o * i, -1)
        bank = (rows @ self.expansion).reshape(o, i, n, n_in, k, k)
        return bank.transpose(1, 2).reshape(o * n, i * n_in, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.filter_bank(), self.bias, padding=self.padding)


class LiftingConv2d(_ExpandedConv):
    """Z² → G: a plain image to feature maps on the group (one filter copy per group element)."""

    in_orientations = 1

    def __init__(self, in_channels: int, out_channels: int, group: Group, kernel_size: int, padding: int = 0,
                 method: str = "pixel", bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, group, kernel_size, padding, method, bias)

    def _expansion(self, maps: torch.Tensor) -> torch.Tensor:
        # (P, G·k²): copy g of a filter is T_g applied to it.
        return maps.permute(2, 0, 1).reshape(maps.shape[-1], -1).contiguous()


class GroupConv2d(_ExpandedConv):
    """G → G: filters transformed in the plane by g and cyclically permuted along the input group axis."""

    def __init__(self, in_channels: int, out_channels: int, group: Group, kernel_size: int, padding: int = 0,
                 method: str = "pixel", bias: bool = False) -> None:
        self.in_orientations = group.order
        super().__init__(in_channels, out_channels, group, kernel_size, padding, method, bias)

    def _expansion(self, maps: torch.Tensor) -> torch.Tensor:
        # Output orientation g reads stored input orientation g^{-1}h for input h, transformed in the plane by g.
        n, k2, p = maps.shape
        source = self.group.cayley[self.group.inverse]  # [g, h] = g^{-1} h
        expansion = torch.zeros(n, p, n, n, k2)
        for g in range(n):
            for h in range(n):
                expansion[source[g, h], :, g, h, :] = maps[g].T
        return expansion.reshape(n * p, n * n * k2)


def migrate_legacy_steerable(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``state_dict`` (saved with the legacy SVD steerable basis) with every steerable layer's
    coefficients rewritten for the current basis, so that ``model`` loads the same filters. Other layers and
    other kernel methods pass through unchanged."""
    migrated = dict(state_dict)
    for name, module in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if not isinstance(module, _ExpandedConv) or module.method != "steerable" or key not in migrated:
            continue
        weight = migrated[key]
        change = torch.as_tensor(legacy_steerable_change_of_basis(module.kernel_size), dtype=torch.float64)
        migrated[key] = (weight.to(torch.float64) @ change.T).to(weight.dtype)
    return migrated
