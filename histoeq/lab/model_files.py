"""Which loader opens which model file for `histoeq eval`: one static table, by suffix.

A run folder or ``.pt`` checkpoint is scored by PyTorch (`histoeq.evaluate.predictors`); an exported ``.onnx``
model by the ONNX Runtime session of `histoeq.infer.OnnxTileModel` (uint8 NHWC in, probabilities out), on CUDA when
evaluation runs on a CUDA device and the CUDA provider really loads, else on the CPU. The table lives here, above
both evaluation and inference, so that neither imports the other and nothing registers itself on import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from types import MappingProxyType

import torch

from histoeq.evaluate.predictors import Predictor, PredictorLoader, load_checkpoint_predictor
from histoeq.infer.onnx_model import OnnxTileModel


def load_onnx_predictor(path: Path, device: torch.device) -> Predictor:
    model = OnnxTileModel(path, "auto" if device.type == "cuda" else "cpu")
    meta = model.metadata
    return Predictor(
        name=str(path),
        predict=model,
        tile_px=meta.tile_px,
        info={"onnx": str(path), "provider": model.provider, "model_config": meta.model_config,
              "classes": meta.classes, "val": meta.metrics.get("val"), "precision": meta.precision,
              "operating_point": None if meta.operating_point is None else asdict(meta.operating_point)},
        stain=meta.stain,
    )


PREDICTOR_LOADERS: Mapping[str, PredictorLoader] = MappingProxyType({
    ".pt": load_checkpoint_predictor,
    ".onnx": load_onnx_predictor,
})
