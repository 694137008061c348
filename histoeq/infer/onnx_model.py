"""One ONNX Runtime session per process, on the execution provider the user asked for, and proof of which one ran.

onnxruntime-gpu silently falls back to the CPU when CUDA 13 / cuDNN 9 are missing, so the provider is read back
from ``session.get_providers()`` after the session is built, never assumed: ``--device cuda`` without a working CUDA
provider is an error (exit 2), ``auto`` takes CUDA when it really loads and says so.

`OnnxTileModel` is also the predictor callable that evaluation uses: uint8 NHWC tiles in, class probabilities out.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from histoeq.errors import HistoeqError, InputError, clip
from histoeq.export.metadata import INPUT_NAME, ModelMetadata, parse_metadata

Device = Literal["auto", "cuda", "cpu"]
PROBABILITY_SLACK = 1e-3  # softmax in fp16 rounds a little past 0 and 1
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# ORT logs a failed CUDA load (missing CUDA 13 / cuDNN 9) as a multi-line error before falling back; we detect the
# fallback and report it in one line, so its log is quiet unless HISTOEQ_ORT_LOG_LEVEL (0 verbose .. 4 fatal) asks.
ORT_LOG_LEVEL = int(os.environ.get("HISTOEQ_ORT_LOG_LEVEL", "4"))
ort.set_default_logger_severity(ORT_LOG_LEVEL)


def _providers_for(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device not in ("cuda", "auto"):
        raise HistoeqError(f"--device must be auto, cuda or cpu (got {device!r})")
    if CUDA not in available:
        if device == "cuda":
            raise HistoeqError(
                "--device cuda: this onnxruntime has no CUDA execution provider "
                f"(onnxruntime {ort.__version__}, providers {', '.join(available)}); install histoeq[gpu]"
            )
        return [CPU]
    return [CUDA, CPU]


class OnnxTileModel:
    """An exported histoeq model, ready to classify uint8 tiles; `provider` is the one actually in use."""

    def __init__(self, path: str | Path, device: Device | str = "auto", intra_op_threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(self.path, "model file not found")
        if self.path.stat().st_size == 0:
            raise InputError(self.path, "not an ONNX model (zero-byte file)")
        options = ort.SessionOptions()
        options.log_severity_level = ORT_LOG_LEVEL
        # ORT's worker threads busy-wait between runs by default; in `predict` the slide readers run in the gaps, so
        # spinning would steal their cores (measured on 16 cores: pipeline at 1/3 of the read-only rate with it on).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=_providers_for(device))
        except HistoeqError:
            raise
        except Exception as exc:  # ORT raises InvalidProtobuf, Fail, InvalidGraph ... for foreign files
            raise InputError(self.path, f"not a usable ONNX model ({clip(str(exc), 140) or type(exc).__name__})"
                             ) from None
        self.provider = self.session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise HistoeqError(
                "--device cuda: onnxruntime could not start its CUDA provider (CUDA 13 and cuDNN 9 must be "
                f"installed; HISTOEQ_ORT_LOG_LEVEL=1 shows why) and would fall back to {self.provider}"
            )
        self.metadata: ModelMetadata = parse_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self._check_signature()

    def _check_signature(self) -> None:
        """The graph must take uint8 (batch, tile, tile, 3) and give probabilities for every class."""
        inputs = self.session.get_inputs()
        tile = self.metadata.tile_px
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise InputError(self.path, f"model input must be one tensor named {INPUT_NAME!r}")
        shape = list(inputs[0].shape)
        if inputs[0].type != "tensor(uint8)" or len(shape) != 4 or shape[1:] != [tile, tile, 3]:
            raise InputError(
                self.path, f"model input is {inputs[0].type} {shape}, expected uint8 [batch, {tile}, {tile}, 3]"
            )
        outputs = {o.name: o for o in self.session.get_outputs()}
        if "probabilities" not in outputs:
            raise InputError(self.path, "model has no 'probabilities' output")
        classes = outputs["probabilities"].shape[-1]
        if isinstance(classes, int) and classes != len(self.metadata.classes):
            raise InputError(
                self.path,
                f"model gives {classes} probabilities but its metadata names {len(self.metadata.classes)} classes",
            )

    @property
    def classes(self) -> list[str]:
        return self.metadata.classes

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) float32 for uint8 tiles (N, tile, tile, 3)."""
        if tiles.dtype != np.uint8 or tiles.ndim != 4:
            raise ValueError(f"expected uint8 NHWC tiles, got {tiles.dtype} {tiles.shape}")
        try:
            (probs,) = self.session.run(["probabilities"], {INPUT_NAME: np.ascontiguousarray(tiles)})
        except Exception as exc:  # ORT raises RuntimeException / Fail (e.g. "Failed to allocate memory") at run time
            detail = clip(str(exc)) or type(exc).__name__
            raise InputError(self.path, f"the model failed on a batch of {len(tiles)} tiles ({detail}); a "
                                        "smaller --batch-size needs less memory") from None
        return self._checked(probs, len(tiles))

    def _checked(self, probs: np.ndarray, n: int) -> np.ndarray:
        """The model's output, refused unless it is (n, classes) probabilities: a broken export (NaN weights, a
        logits head named 'probabilities') would otherwise be written out as empty cells or bare NaN."""
        probs = np.asarray(probs)
        expected = (n, len(self.classes))
        if probs.shape != expected:
            raise InputError(self.path, f"the model gave probabilities of shape {list(probs.shape)} for {n} tiles, "
                                        f"expected {list(expected)}")
        bad = ~np.isfinite(probs).all(axis=1)
        if bad.any():
            raise InputError(self.path, f"the model gave non-finite probabilities (NaN or infinity) for "
                                        f"{int(bad.sum())} of {n} tiles")
        if probs.min() < -PROBABILITY_SLACK or probs.max() > 1 + PROBABILITY_SLACK:
            raise InputError(self.path, f"the model gave values outside [0, 1] ({float(probs.min()):.3g} to "
                                        f"{float(probs.max()):.3g}) as probabilities")
        return probs.astype(np.float32, copy=False)
