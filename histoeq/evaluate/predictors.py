"""Turn something on disk (a run folder, a checkpoint, an exported model) into a `PredictFn` for evaluation.

`load_predictor` looks a file's loader up by suffix in the table it is given; a run folder is always a PyTorch
checkpoint. Evaluation itself only knows checkpoints (`CHECKPOINT_LOADERS`); the table that also opens exported
``.onnx`` models is `histoeq.lab.model_files.PREDICTOR_LOADERS`, above both evaluation and inference, so that this
package never imports the later stages. A loader returns a `Predictor`: the callable plus what evaluation checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from histoeq.errors import InputError
from histoeq.runs.checkpoint import load_model, resolve_checkpoint
from histoeq.runs.normalisation import normalise


@dataclass
class Predictor:
    name: str
    predict: Callable[[np.ndarray], np.ndarray]
    tile_px: int | None
    info: dict[str, Any] = field(default_factory=dict)
    stain: dict[str, Any] | None = None  # per-slide stain normalisation the model expects (histoeq.data.stain)


PredictorLoader = Callable[[Path, torch.device], Predictor]


def torch_predict_fn(model: nn.Module, normalisation: dict[str, list[float]], device: torch.device,
                     batch_size: int = 512) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (B,H,W,3) numpy -> softmax probabilities (B,C) numpy, normalising like training did."""
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
    model, payload = load_model(path)
    ckpt = resolve_checkpoint(path)
    return Predictor(name=str(path), predict=torch_predict_fn(model, payload["normalisation"], device),
                     tile_px=int(payload["tile_px"]),
                     info={"checkpoint": str(ckpt), "model_config": payload["model_config"],
                           "epoch": payload.get("epoch"), "val": payload.get("metrics", {}).get("val"),
                           "classes": payload.get("classes")},
                     stain=payload.get("stain"))


CHECKPOINT_LOADERS: Mapping[str, PredictorLoader] = MappingProxyType({".pt": load_checkpoint_predictor})


def load_predictor(path: str | Path, device: torch.device,
                   loaders: Mapping[str, PredictorLoader] = CHECKPOINT_LOADERS) -> Predictor:
    """A run folder, or a file whose (lower-case) suffix has a loader in `loaders`."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such run folder or model file")
    if path.is_dir():
        return load_checkpoint_predictor(path, device)
    suffix = path.suffix.lower()
    if suffix not in loaders:
        raise InputError(path, f"cannot evaluate a {suffix or 'suffix-less'} file (expected a run folder or a "
                               f"{' or '.join(sorted(loaders))} file)")
    return loaders[suffix](path, device)
