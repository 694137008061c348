"""Turn something on disk (a run folder, a checkpoint, an exported model) into a `PredictFn` for evaluation.

Loaders are looked up by file suffix in `PREDICTOR_LOADERS`; a run folder or ``.pt`` file is a PyTorch checkpoint.
Another format (the export engineer's ``.onnx``) registers itself with `register_predictor_loader` and then works in
`histoeq eval` unchanged. A loader returns a `Predictor`: the callable plus what evaluation checks (tile size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from histoeq.errors import InputError


@dataclass
class Predictor:
    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    tile_px: int | None
    info: dict[str, Any] = field(default_factory=dict)
    stain: dict[str, Any] | None = None  # per-slide stain normalisation the model expects (histoeq.data.stain)


PredictorLoader = Callable[[Path, torch.device], Predictor]
PREDICTOR_LOADERS: dict[str, PredictorLoader] = {}


def register_predictor_loader(suffix: str, loader: PredictorLoader) -> None:
    """Make `histoeq eval PATH` accept files ending in `suffix` (e.g. ".onnx")."""
    PREDICTOR_LOADERS[suffix.lower()] = loader


def torch_predict_fn(model: nn.Module, normalisation: dict[str, list[float]], device: torch.device,
                     batch_size: int = 512) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (B,H,W,3) numpy -> softmax probabilities (B,C) numpy, normalising like training did."""
    from histoeq.train.batches import normalise

    mean = torch.tensor(normalisation["mean"], dtype=torch.float32, device=device)
    std = torch.tensor(normalisation["std"], dtype=torch.float32, device=device)
    model = model.to(device).eval()

    @torch.no_grad()
    def predict(batch: np.ndarray) -> np.ndarray:
        out = []
        tiles = torch.from_numpy(np.ascontiguousarray(batch))
        for start in range(0, tiles.shape[0], batch_size):
            x = normalise(tiles[start:start + batch_size].to(device), mean, std)
            out.append(torch.softmax(model(x).float(), dim=1).cpu())
        return torch.cat(out).numpy()

    return predict


def load_checkpoint_predictor(path: Path, device: torch.device) -> Predictor:
    from histoeq.train.checkpoint import load_model, resolve_checkpoint

    model, payload = load_model(path)
    ckpt = resolve_checkpoint(path)
    return Predictor(name=str(path), predict=torch_predict_fn(model, payload["normalisation"], device),
                     tile_px=int(payload["tile_px"]),
                     info={"checkpoint": str(ckpt), "model_config": payload["model_config"],
                           "epoch": payload.get("epoch"), "val": payload.get("metrics", {}).get("val"),
                           "classes": payload.get("classes")},
                     stain=payload.get("stain"))


def load_predictor(path: str | Path, device: torch.device) -> Predictor:
    """A run folder / .pt checkpoint, or any suffix registered with `register_predictor_loader`."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such run folder or model file")
    suffix = path.suffix.lower()
    if suffix and suffix != ".pt" and suffix not in PREDICTOR_LOADERS:
        try:  # let the export area register its formats (e.g. .onnx) if it is installed
            import histoeq.export  # noqa: F401
        except ImportError:
            pass
    if suffix in PREDICTOR_LOADERS:
        return PREDICTOR_LOADERS[suffix](path, device)
    if path.is_dir() or suffix == ".pt":
        return load_checkpoint_predictor(path, device)
    raise InputError(path, f"cannot evaluate a {suffix or 'suffix-less'} file (expected a run folder or .pt"
                     + (", or one of " + ", ".join(sorted(PREDICTOR_LOADERS)) if PREDICTOR_LOADERS else "") + ")")
