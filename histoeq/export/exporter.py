"""`histoeq export`: a training run (or checkpoint) -> one verified, self-describing ONNX file.

Order of work: build the uint8-in classifier from `to_plain()`, export it, attach the metadata, check the bytes
in onnxruntime (agreement with torch and the group invariance, see `histoeq.export.verify`), and only then write
the file, atomically (temporary name in the target folder, then `os.replace`). A model that fails is not written.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from histoeq import __version__
from histoeq.atomic import write_bytes_atomic
from histoeq.errors import InputError
from histoeq.export.check_patches import check_patches
from histoeq.export.graph import build_classifier, export_graph
from histoeq.export.metadata import ModelMetadata
from histoeq.export.verify import Verification, verify_onnx
from histoeq.progress import ProgressFn, null_progress

DEFAULT_OPSET = 18


@dataclass
class ExportResult:
    path: Path
    metadata: ModelMetadata
    verification: Verification
    size_bytes: int
    seconds: float


def _model_metadata(model: nn.Module, info: dict[str, Any], fp16: bool) -> ModelMetadata:
    config = dict(info.get("model_config") or getattr(model, "config", None) or {})
    group = getattr(model, "group", None)
    normalisation = info.get("normalisation") or {}
    if "mean" not in normalisation or "std" not in normalisation:
        raise InputError(None, "model info has no normalisation mean/std")
    return ModelMetadata(
        model_name=str(config.get("name", type(model).__name__)),
        model_config=config,
        group={"name": getattr(group, "name", "C1"), "order": int(getattr(group, "order", 1))},
        classes=[str(c) for c in info["classes"]],
        tile_px=int(info["tile_px"]),
        mpp=float(info.get("mpp") or 4.0),
        normalisation={"mean": [float(v) for v in normalisation["mean"]], "std": [float(v) for v in normalisation["std"]]},
        precision="fp16" if fp16 else "fp32",
        data_hash=info.get("data_hash"),
        fraction_hash=info.get("fraction_hash"),
        metrics=dict(info.get("metrics") or {}),
        histoeq_version=str(info.get("histoeq_version") or __version__),
    )


def export_model(
    model: nn.Module,
    info: dict[str, Any],
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    idc_dir: Path | None = None,
    source: str | Path | None = None,
    progress: ProgressFn = null_progress,
) -> ExportResult:
    """Export an in-memory model with its training `info` (checkpoint payload keys) to `out`, verified."""
    start = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError(out, "output must end in .onnx")
    meta = _model_metadata(model, info, fp16)
    mean, std = meta.normalisation["mean"], meta.normalisation["std"]
    progress("export", 0, 3, "tracing")
    classifier = build_classifier(model, mean, std, fp16=fp16)
    with tempfile.TemporaryDirectory(prefix="histoeq-export-") as tmp:
        raw_path = Path(tmp) / "model.onnx"
        export_graph(classifier, meta.tile_px, raw_path, opset)
        proto = onnx.load(str(raw_path))
    progress("export", 1, 3, "verifying in onnxruntime")
    tiles, patches_source = check_patches(meta.tile_px, idc_dir=idc_dir)
    _set_metadata(proto, meta)
    verification = verify_onnx(
        proto.SerializeToString(), model, tiles, patches_source, mean, std, meta.group["name"], meta.model_name, fp16
    )
    if not verification.passed:
        raise InputError(source, f"export refused, the ONNX model fails verification: {verification.failure()}")
    meta = ModelMetadata(**{**meta.__dict__, "verification": verification.as_dict()})
    _set_metadata(proto, meta)
    proto.producer_name, proto.producer_version = "histoeq", __version__
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    progress("export", 2, 3, "writing")
    write_bytes_atomic(out, data)
    progress("export", 3, 3, "done")
    return ExportResult(out, meta, verification, len(data), time.perf_counter() - start)


def _set_metadata(proto: onnx.ModelProto, meta: ModelMetadata) -> None:
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())


def test_metrics_from_eval(path: str | Path) -> dict[str, Any]:
    """The held-out metrics of an `histoeq eval` result (its first run): the unrotated view, the mean over the
    evaluated angles and the label-change share, with where they came from."""
    try:
        doc = json.loads(Path(path).read_text())
        run = doc["runs"][0]
        identity = next(v for v in run["views"] if v["angle"] == 0 and not v["mirrored"])
    except (OSError, ValueError, KeyError, IndexError, StopIteration, TypeError):
        raise InputError(path, "not an eval.json written by `histoeq eval`") from None
    names = ("auc", "accuracy", "balanced_accuracy", "f1")
    return {
        **{k: identity[k] for k in names},
        "mean_over_angles": {k: run["summary"][k]["mean"] for k in names if k in run["summary"]},
        "label_change_fraction": run.get("label_change_fraction"),
        "split": doc.get("split"), "n": doc.get("n"), "rotations": doc.get("rotations"),
        "source": Path(path).name,
    }


def export_run(
    run: str | Path,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    idc_dir: Path | None = None,
    test_metrics: str | Path | None = None,
    progress: ProgressFn = null_progress,
) -> ExportResult:
    """Export the best checkpoint of a training run folder (or a checkpoint file); ``test_metrics`` is an
    eval.json of the same model on held-out data, stored in the metadata next to the validation metrics."""
    from histoeq.train.checkpoint import load_model

    model, info = load_model(run)
    if test_metrics is not None:
        info = {**info, "metrics": {**(info.get("metrics") or {}), "test": test_metrics_from_eval(test_metrics)}}
    return export_model(model, info, out, opset=opset, fp16=fp16, idc_dir=idc_dir, source=run, progress=progress)
