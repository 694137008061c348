"""Export trained models to verified, self-describing ONNX files (see `exporter`, `metadata`, `verify`)."""

from histoeq.export.exporter import DEFAULT_OPSET, ExportResult, export_model, export_run
from histoeq.export.metadata import ModelMetadata, parse_metadata

__all__ = ["DEFAULT_OPSET", "ExportResult", "ModelMetadata", "export_model", "export_run", "parse_metadata"]

from histoeq.export.eval_hook import register as _register_eval_loader  # noqa: E402

_register_eval_loader()
