"""One ONNX Runtime session per process, on the execution provider the user asked for, and proof of which one ran.

onnxruntime-gpu silently falls back to the CPU when CUDA 13 / cuDNN 9 are missing, so the provider is read back
from ``session.get_providers()`` after the session is built, never assumed: ``--device cuda`` without a working CUDA
provider is an error (exit 2), ``auto`` takes CUDA when it really loads and says so.

onnxruntime-gpu does not bundle CUDA: its CUDA provider links cudart, cuBLAS and cuRAND and opens cuDNN at run time.
The gpu extra installs those as NVIDIA's wheels, which the system loader does not search, so before the first CUDA
session they are loaded from site-packages with ``onnxruntime.preload_dlls`` (once per process; what it found is
kept for the error message and ``histoeq doctor``).

`OnnxTileModel` is also the predictor callable that evaluation uses: uint8 NHWC tiles in, class probabilities out.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
import warnings
from dataclasses import dataclass, field
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


# What ORT's CUDA provider needs from CUDA and cuDNN, as file-name prefixes (sonames carry the major version).
CUDA_LIBRARIES = ("libcudart.so", "libcublasLt.so", "libcublas.so", "libcurand.so", "libcudnn.so")


@dataclass(frozen=True)
class CudaLibraries:
    """What preloading the CUDA and cuDNN libraries did. `loaded` maps each library the CUDA provider needs to the
    file this process mapped (read from /proc/self/maps, so it holds however they got there), `missing` lists the
    prefixes of those not loaded, `problem` the first failure preload_dlls reported. `attempted` is False when
    this onnxruntime has no CUDA provider or no preload_dlls (then the system's library path must provide them)."""

    attempted: bool
    loaded: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    problem: str = ""

    @property
    def from_wheels(self) -> bool:
        return bool(self.loaded) and all(f"{os.sep}nvidia{os.sep}" in path for path in self.loaded.values())

    def describe(self) -> str:
        """One line: which libraries were found and where, or which were not."""
        if not self.attempted:
            return ("not preloaded (this onnxruntime has no CUDA provider)" if CUDA not in ort.get_available_providers()
                    else f"not preloaded (onnxruntime {ort.__version__} has no preload_dlls; CUDA 13 and cuDNN 9 "
                         "must be on the library path)")
        if self.missing:
            return (f"not found: {', '.join(self.missing)} (pip install 'histoeq[gpu]' brings NVIDIA's wheels)"
                    + (f"; {self.problem}" if self.problem else ""))
        where = os.path.commonpath([os.path.dirname(path) for path in self.loaded.values()]) if self.loaded else "?"
        source = "NVIDIA's wheels" if self.from_wheels else "the system"
        return f"{', '.join(self.loaded)} loaded from {source} ({where})"


@functools.cache
def preload_cuda_libraries() -> CudaLibraries:
    """Load CUDA and cuDNN from NVIDIA's wheels before the first CUDA session, once per process. preload_dlls prints
    its failures instead of raising; they are captured here (stdout stays the CLI's) and reported, never raised:
    the session that follows then falls back to the CPU, and the caller says why."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None or CUDA not in ort.get_available_providers():
        return CudaLibraries(attempted=False)
    printed = io.StringIO()
    problem = ""
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            preload()
    except Exception as exc:  # noqa: BLE001 - e.g. RuntimeError for a bad directory; reported, not raised
        problem = clip(str(exc)) or type(exc).__name__
    failures = [line for line in printed.getvalue().splitlines() if line.startswith("Failed to load")]
    problem = problem or (clip(failures[0]) if failures else "")
    mapped = _mapped_libraries()
    if mapped is None:  # no /proc (not Linux): trust preload_dlls' own report
        return CudaLibraries(attempted=True, problem=problem)
    loaded = {name: path for prefix in CUDA_LIBRARIES for name, path in mapped.items() if name.startswith(prefix)}
    missing = tuple(prefix.removesuffix(".so") for prefix in CUDA_LIBRARIES
                    if not any(name.startswith(prefix) for name in loaded))
    return CudaLibraries(attempted=True, loaded=loaded, missing=missing, problem=problem)


def _mapped_libraries() -> dict[str, str] | None:
    """File name -> path of every shared library this process has mapped, or None where /proc is absent."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    fields = (line.split(maxsplit=5) for line in lines)
    paths = (parts[5] for parts in fields if len(parts) == 6 and parts[5].startswith("/"))
    return {os.path.basename(path): path for path in paths if ".so" in os.path.basename(path)}


def _why_cuda_did_not_start() -> str:
    """The likeliest reason the CUDA provider fell back, for the one-line refusal."""
    libraries = preload_cuda_libraries()
    if libraries.attempted and libraries.missing:
        return f"CUDA libraries {libraries.describe()}"
    try:
        ctypes.CDLL("libcuda.so.1" if os.name != "nt" else "nvcuda.dll")
    except OSError:
        return "no NVIDIA driver: libcuda not found"
    return "needs an NVIDIA GPU, CUDA 13 and cuDNN 9; HISTOEQ_ORT_LOG_LEVEL=1 or histoeq doctor shows why"


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
    preload_cuda_libraries()
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
            raise HistoeqError(f"--device cuda: onnxruntime could not start its CUDA provider "
                               f"({_why_cuda_did_not_start()}) and would fall back to {self.provider}")
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
