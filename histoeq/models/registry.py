"""timm-style model registry: ``create(name, **kw)``, ``list_models()``, ``@register_model``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from histoeq.errors import HistoeqError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model constructor under its function name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model. ``model.config`` holds the arguments: ``create(**model.config)`` rebuilds it."""
    if name not in _REGISTRY:
        raise HistoeqError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    try:
        model = _REGISTRY[name](**kwargs)
    except TypeError as exc:
        raise HistoeqError(f"model {name!r}: {exc}") from None
    return model
