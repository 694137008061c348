"""Let `histoeq eval model.onnx` score an exported model with the same code that scores checkpoints.

Evaluation looks up loaders by suffix (`histoeq.evaluate.predictors.register_predictor_loader`) and imports
`histoeq.export` when it meets an unknown suffix; importing this package registers ``.onnx``. The predictor is the
ONNX Runtime session of `histoeq.infer.OnnxTileModel` (uint8 NHWC in, probabilities out), on CUDA when evaluation
runs on a CUDA device and the CUDA provider really loads, else on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_onnx_for_eval(path: Path, device: Any) -> Any:
    from histoeq.evaluate.predictors import Predictor
    from histoeq.infer.onnx_model import OnnxTileModel

    model = OnnxTileModel(path, "auto" if getattr(device, "type", str(device)) == "cuda" else "cpu")
    meta = model.metadata
    return Predictor(
        name=str(path),
        predict=model,
        tile_px=meta.tile_px,
        info={"onnx": str(path), "provider": model.provider, "model_config": meta.model_config,
              "classes": meta.classes, "val": meta.metrics.get("val"), "precision": meta.precision},
        stain=meta.stain,
    )


def register() -> None:
    try:
        from histoeq.evaluate.predictors import register_predictor_loader
    except ImportError:  # evaluation not installed: nothing to hook into
        return
    register_predictor_loader(".onnx", load_onnx_for_eval)
