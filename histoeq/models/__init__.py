"""Model registry and architectures: ``create(name, **kw)``, ``list_models()``."""

from histoeq.models import zoo as _zoo  # noqa: F401  (registers the models)
from histoeq.models.histonet import HistoNet
from histoeq.models.registry import create, list_models, register_model

__all__ = ["HistoNet", "create", "list_models", "register_model"]
