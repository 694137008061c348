"""Exact invariance by averaging over views: the mean class probability of f(g·x) over the transforms g of D4 that
the model's own group lacks.

Why: a network equivariant to a rotation group C_N (p4, se2) is invariant to the 90° turns but not to the mirror,
which a pathologist's slide has no more reason to respect than "up"; a plain CNN is invariant to nothing. Averaging
over the missing views closes the gap exactly, at |views|× the inference cost: if f is invariant to the subgroup
H of D4 and the views are one representative of each right coset H·r, then for any g in D4 the cosets H·r·g run
over the same cosets again, so mean_r f(r·g·x) = mean_r f(r·x). For se2 (H = C4) that is 2 views, for a CNN
(H = trivial) all 8, the test-time augmentation of the baseline made exact.

The combined group is reported as D_lcm(N, 4) for a model on C_N or D_N (se2 with 8 orientations becomes D8), so
export verifies the 8 D4 transforms in onnxruntime exactly as it does for p4m.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from histoeq.models.ensemble import log_mean_probability
from histoeq.nn.actions import D4, element_in, transform_image
from histoeq.nn.groups import Group, dihedral, trivial

TARGETS = ("d4",)


def missing_views(group: Group) -> list[int]:
    """D4 elements, one per right coset H·r of H = group ∩ D4: the views to average over (identity first)."""
    inside = [h for h in range(D4.order) if element_in(group, D4, h) is not None]
    views: list[int] = []
    covered: set[int] = set()
    for r in range(D4.order):
        if r not in covered:
            views.append(r)
            covered.update(int(D4.cayley[h, r]) for h in inside)
    return views


def averaged_group(group: Group) -> Group:
    """The group the view-averaged model is invariant to: D4 joined with the model's own rotations."""
    return dihedral(math.lcm(group.rotations, 4))


class ViewAveraged(nn.Module):
    """Mean class probability of `model` over the D4 views `views` (indices into `dihedral(4)`), as log-probabilities.

    The views are stacked along the batch, so the wrapped model runs once on |views|× the batch."""

    def __init__(self, model: nn.Module, views: list[int], group: Group) -> None:
        super().__init__()
        if not views or views[0] != 0:
            raise ValueError("views must start with the identity (D4 element 0)")
        self.model = model
        self.views = list(views)
        self.group = group

    @property
    def config(self) -> dict[str, Any]:
        inner = dict(getattr(self.model, "config", {}) or {})
        return {"name": f"{inner.get('name', type(self.model).__name__)}-viewavg{len(self.views)}",
                "combine": "mean_probability_over_views", "invariant_to": self.group.name,
                "views": [{"quarter_turns": D4.quarter_turns(g), "mirrored": D4.is_mirrored(g)} for g in self.views],
                "inner": inner}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"view averaging over D4 needs square tiles, got {tuple(x.shape[-2:])}")
        batch = torch.cat([transform_image(x, D4, g) for g in self.views])
        logits = self.model(batch)
        return log_mean_probability(logits.reshape(len(self.views), x.shape[0], -1))

    @torch.no_grad()
    def to_plain(self, tile_px: int | tuple[int, int] = 50, fuse_bn: bool = True,
                 factored: bool = False) -> ViewAveraged:
        """The same averaging over the wrapped model's standard-operator twin (see `HistoNet.to_plain`)."""
        to_plain = getattr(self.model, "to_plain", None)
        inner = to_plain(tile_px, fuse_bn=fuse_bn, factored=factored) if callable(to_plain) else self.model
        return ViewAveraged(inner, self.views, self.group).eval()


def make_invariant(model: nn.Module, target: str = "d4") -> nn.Module:
    """`model` made exactly invariant to `target` (only 'd4') by view averaging; returned unchanged when its own
    group already is (p4m), so no compute is spent on views that cannot change the answer."""
    if target.lower() not in TARGETS:
        raise ValueError(f"unknown invariance target {target!r}; choose from {', '.join(TARGETS)}")
    group = getattr(model, "group", None) or trivial()
    views = missing_views(group)
    if len(views) == 1:
        return model
    return ViewAveraged(model, views, averaged_group(group)).eval()
