"""The `histoeq models` table: size and cost of every registered model at its default tile."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from histoeq.models.registry import create, list_models


@dataclass
class ModelSummary:
    name: str
    group: str
    order: int
    widths: tuple[int, ...]
    params: int
    macs: int
    exact: str


def count_macs(model: nn.Module, tile_px: int) -> int:
    """Multiply-accumulates of one forward pass at tile_px, counted on the plain (exported) module."""
    plain = model.to_plain(tile_px, fuse_bn=True) if hasattr(model, "to_plain") else model
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        plain(torch.zeros(1, 3, tile_px, tile_px))
    for h in handles:
        h.remove()
    return total


def model_table() -> list[ModelSummary]:
    rows = []
    for name in list_models():
        model = create(name)
        cfg = model.default_cfg
        exact = "—" if cfg["exact_group"] == "none" else f"{cfg['exact_group']} ({cfg['exact_elements']} transforms)"
        rows.append(ModelSummary(name, cfg["group"], cfg["group_order"], model.widths,
                                 sum(p.numel() for p in model.parameters()), count_macs(model, cfg["tile_px"]), exact))
    return rows
