"""`histoeq doctor`: what this installation can do, gathered in one place for a bug report or a new machine.

Versions, the slide readers that import, the ONNX Runtime execution providers, whether the CUDA and cuDNN libraries
(NVIDIA's wheels, preloaded as `predict` does) were found and, when CUDA is not usable, the reason (no CUDA build of
onnxruntime, no NVIDIA driver, or the library ONNX Runtime failed to load), the CPU cores and the model `predict`
uses by default. Nothing here raises: every probe that fails becomes a line saying why.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from histoeq import __version__

CUDA_PROVIDER = "CUDAExecutionProvider"


@dataclass
class Item:
    name: str
    value: str
    ok: bool = True


@dataclass
class Section:
    title: str
    items: list[Item] = field(default_factory=list)


def diagnose() -> list[Section]:
    """Every section of the report, in the order it is printed."""
    return [_versions(), _slide_readers(), _onnxruntime(), _cpu(), _default_model()]


def _versions() -> Section:
    section = Section("versions", [Item("python", f"{platform.python_version()} ({sys.executable})"),
                                   Item("histoeq", __version__)])
    for dist, module in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("numpy", "numpy")):
        section.items.append(_module_version(dist, module))
    return section


def _module_version(name: str, module: str) -> Item:
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - an import that fails for any reason is the finding
        return Item(name, f"not importable ({_first_line(exc)})", ok=False)
    return Item(name, str(getattr(imported, "__version__", "") or _dist_version(name)))


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _slide_readers() -> Section:
    section = Section("slide readers")
    try:
        import openslide

        section.items.append(Item("openslide", f"{openslide.__library_version__} (openslide-python "
                                               f"{openslide.__version__}): SVS, NDPI, MRXS, SCN, tiled TIFF"))
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError when the C library is missing
        section.items.append(Item("openslide", f"not available ({_first_line(exc)}); vendor formats cannot be read",
                                  ok=False))
    tiff = _module_version("tifffile", "tifffile")
    codecs = _module_version("imagecodecs", "imagecodecs")
    section.items.append(Item("tifffile", f"{tiff.value}, imagecodecs {codecs.value}: OME-TIFF, strip TIFF, JPEG 2000",
                              ok=tiff.ok and codecs.ok))
    pil = _module_version("Pillow", "PIL")
    section.items.append(Item("PIL", f"{pil.value}: PNG, JPEG", ok=pil.ok))
    return section


def _onnxruntime() -> Section:
    section = Section("onnx runtime")
    try:
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001
        section.items.append(Item("providers", f"onnxruntime not importable ({_first_line(exc)})", ok=False))
        return section
    providers = ort.get_available_providers()
    section.items.append(Item("providers", ", ".join(providers)))
    if CUDA_PROVIDER in providers:  # before the probe session, as predict does before its first CUDA session
        section.items.append(_cuda_libraries())
    reason = cuda_problem(providers)
    section.items.append(Item("cuda", "usable" if reason is None else f"cannot start: {reason}", ok=reason is None))
    return section


def _cuda_libraries() -> Item:
    try:
        from histoeq.infer.onnx_model import preload_cuda_libraries

        libraries = preload_cuda_libraries()
    except Exception as exc:  # noqa: BLE001
        return Item("cuda libraries", f"cannot be checked ({_first_line(exc)})", ok=False)
    return Item("cuda libraries", libraries.describe(), ok=not (libraries.attempted and libraries.missing))


def cuda_problem(providers: list[str], load_library: Callable[[str], object] = ctypes.CDLL,
                 start: Callable[[], tuple[bool, str]] | None = None) -> str | None:
    """Why ONNX Runtime cannot run on CUDA here, or None when a CUDA session starts."""
    if CUDA_PROVIDER not in providers:
        return "this onnxruntime has no CUDA provider (pip install 'histoeq[gpu]' installs onnxruntime-gpu)"
    try:
        load_library("libcuda.so.1" if os.name != "nt" else "nvcuda.dll")
    except OSError:
        return "no NVIDIA driver (libcuda not found)"
    started, log = (start or _start_cuda_session)()
    if started:
        return None
    missing = re.findall(r"(lib[\w.+-]+\.so[\d.]*|\w+\.dll)\S*: cannot open shared object file", log)
    if missing:
        return f"library missing: {', '.join(dict.fromkeys(missing))} (CUDA and cuDNN versions this onnxruntime needs)"
    detail = next((line.strip() for line in log.splitlines()
                   if any(word in line.lower() for word in ("error", "fail", "[e:"))), "")
    return "the CUDA provider failed to load" + (f" ({detail[:200]})" if detail else "")


def _start_cuda_session() -> tuple[bool, str]:
    """(whether a one-node session runs on CUDA, ONNX Runtime's log of the attempt). ORT logs a failed provider
    load from C++ to file descriptor 2, so the descriptor is redirected to a file while the session is built."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 1
    with tempfile.TemporaryFile(mode="w+b") as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            session = ort.InferenceSession(model, options, providers=[CUDA_PROVIDER, "CPUExecutionProvider"])
            started = session.get_providers()[0] == CUDA_PROVIDER
        except Exception as exc:  # noqa: BLE001 - reported as the reason
            started, error = False, str(exc)
        else:
            error = ""
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        return started, log.read().decode("utf-8", "replace") + error


def _cpu() -> Section:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    section = Section("cpu", [Item("cores", f"{os.cpu_count()} ({usable} usable by this process)")])
    try:
        import torch

        section.items.append(Item("torch threads", str(torch.get_num_threads())))
        section.items.append(Item("torch cuda", f"{torch.cuda.device_count()} device(s)" if torch.cuda.is_available()
                                  else f"none (torch built for CUDA {torch.version.cuda})" if torch.version.cuda
                                  else "none (CPU-only torch build)"))
    except Exception as exc:  # noqa: BLE001
        section.items.append(Item("torch", f"not importable ({_first_line(exc)})", ok=False))
    return section


def _default_model() -> Section:
    from histoeq.errors import HistoeqError

    section = Section("default model")
    try:
        from histoeq.infer import OnnxTileModel
        from histoeq.infer.model_index import find_model

        entry = find_model()
        path = entry.path
        meta = OnnxTileModel(path, "cpu").metadata
        section.items.append(Item("model", f"{entry.name}: {path} ({meta.model_name}, "
                                           f"classes {','.join(meta.classes)}, "
                                           f"{meta.tile_px} px at {meta.mpp:g} µm/px)"))
        point = meta.operating_point
        section.items.append(Item("operating point", "none stored (predict uses threshold 0.5, context none)"
                                  if point is None else point.describe()))
    except HistoeqError as exc:
        section.items.append(Item("model", _first_line(exc), ok=False))
    except Exception as exc:  # noqa: BLE001
        section.items.append(Item("model", f"cannot be loaded ({_first_line(exc)})", ok=False))
    return section


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
