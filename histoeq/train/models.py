"""The training side's adapter to `histoeq.models`: build a model from CLI options, read its config, unwrap DDP.

Kept separate so the trainer, the benchmark and the sweep build models the same way (width/match are passed only
when given, so each model keeps its own defaults; variants of a model are registered names such as ``se2_c16``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from histoeq import models
from histoeq.errors import HistoeqError


def available_models() -> list[str]:
    return list(models.list_models())


def create_model(name: str, *, num_classes: int, width: int | None = None,
                 match: str | None = None, **extra: Any) -> nn.Module:
    """`histoeq.models.create` with the CLI's options; an unknown name is a one-line `HistoeqError`."""
    names = available_models()
    if name not in names:
        raise HistoeqError(f"unknown model {name!r} (available: {', '.join(names)})")
    kwargs: dict[str, Any] = {"num_classes": num_classes, **extra}
    if width is not None:
        kwargs["width"] = width
    if match is not None:
        kwargs["match"] = match
    return models.create(name, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def model_config(model: nn.Module) -> dict[str, Any]:
    """The JSON-able dict with which `histoeq.models.create(**config)` rebuilds `model`."""
    config = getattr(unwrap(model), "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise HistoeqError(f"model {type(model).__name__} has no .config with a 'name' (cannot checkpoint it)")
    return dict(config)
