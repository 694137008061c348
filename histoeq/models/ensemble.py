"""A seed ensemble: several trained models of one recipe averaged in probability, shipped as one model.

Why: with few validation patients, seeds of the same recipe can differ far more on new patients than validation
can show (on IDC, test AUC 0.897-0.931 across three seeds whose validation AUCs lie within 0.003). Averaging
the seeds removes the need to pick one. Averaging invariant members keeps the invariance exactly: if every
member satisfies f(gx) = f(x) for g in a group, so does their mean, so an ensemble of p4m models is still exactly
D4-invariant and `histoeq export` verifies it as such.

The output is a logit vector whose softmax is the members' mean probability (log of the mean, computed as a
log-sum-exp of the members' log-softmax), so everything downstream that applies a softmax to logits (training
metrics, eval, the exported graph) sees the mean probability without knowing it faces an ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def log_mean_probability(logits: torch.Tensor) -> torch.Tensor:
    """(M, B, C) logits of M models or views -> (B, C) log of their mean class probability (log-sum-exp of the
    log-softmax, so no probability underflows before the mean)."""
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


class ProbabilityEnsemble(nn.Module):
    """Mean class probability of `members` (same classes and input), returned as log-probabilities."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        groups = {self.group_signature(m) for m in members}
        if len(groups) != 1:
            raise ValueError(f"ensemble members are equivariant to different groups: {sorted(map(str, groups))}")
        self.members = nn.ModuleList(members)
        # The shared group is what the ensemble is invariant to; export reads it to choose its invariance check.
        self.group = getattr(members[0], "group", None)

    @staticmethod
    def group_signature(model: nn.Module) -> tuple[str, int]:
        group = getattr(model, "group", None)
        return (getattr(group, "name", "C1"), int(getattr(group, "order", 1)))

    @property
    def config(self) -> dict[str, Any]:
        """Provenance for export metadata: the members' configs (an ensemble is built from runs, not trained)."""
        configs = [dict(getattr(m, "config", {}) or {}) for m in self.members]
        names = sorted({str(c.get("name", "?")) for c in configs})
        return {"name": f"{'+'.join(names)}-ensemble{len(configs)}", "combine": "mean_probability",
                "members": configs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_mean_probability(torch.stack([m(x) for m in self.members]))

    @torch.no_grad()
    def to_plain(self, tile_px: int | tuple[int, int] = 50, fuse_bn: bool = True,
                 factored: bool = False) -> ProbabilityEnsemble:
        """The same ensemble over the members' standard-operator twins (see `HistoNet.to_plain`)."""
        plain = []
        for member in self.members:
            to_plain = getattr(member, "to_plain", None)
            plain.append(to_plain(tile_px, fuse_bn=fuse_bn, factored=factored) if callable(to_plain) else member)
        ensemble = ProbabilityEnsemble(plain)
        ensemble.group = self.group
        return ensemble.eval()
