"""`histoeq export`: a training run (or checkpoint) -> one verified, self-describing ONNX file.

Order of work: build the uint8-in classifier from `to_plain()`, export it, attach the metadata, check the bytes
in onnxruntime (agreement with torch and the group invariance, see `histoeq.export.verify`), and only then write
the file, atomically (temporary name in the target folder, then `os.replace`). A model that fails is not written.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from histoeq import __version__
from histoeq.atomic import check_output_file, write_bytes_atomic
from histoeq.errors import HistoeqError, InputError
from histoeq.export.check_patches import check_patches
from histoeq.export.graph import build_classifier, export_graph
from histoeq.export.metadata import ModelMetadata, OperatingPoint
from histoeq.export.verify import Verification, verify_onnx
from histoeq.models.ensemble import ProbabilityEnsemble
from histoeq.models.view_average import make_invariant
from histoeq.progress import ProgressFn, null_progress
from histoeq.runs.checkpoint import check_payload, load_model

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter's native opset; older ones go through a version converter that fails on Reduce*


@dataclass
class ExportResult:
    path: Path
    metadata: ModelMetadata
    verification: Verification
    size_bytes: int
    seconds: float


def _model_metadata(model: nn.Module, info: dict[str, Any], fp16: bool, source: str | Path | None) -> ModelMetadata:
    check_payload(info, source, weights=False)
    mpp = info.get("mpp")
    # Checked here, not at load: eval needs no µm/px, but predict lays its tile grid with this one.
    if not (isinstance(mpp, int | float) and not isinstance(mpp, bool) and math.isfinite(mpp) and mpp > 0):
        raise InputError(source, f"checkpoint has no usable µm/px (mpp {mpp!r}), which predict needs; pass the "
                                 "training patches' µm/px with --mpp")
    config = dict(info.get("model_config") or getattr(model, "config", None) or {})
    group = getattr(model, "group", None)
    normalisation = info["normalisation"]
    return ModelMetadata(
        model_name=str(config.get("name", type(model).__name__)),
        model_config=config,
        group={"name": getattr(group, "name", "C1"), "order": int(getattr(group, "order", 1))},
        classes=[str(c) for c in info["classes"]],
        tile_px=int(info["tile_px"]),
        mpp=float(mpp),
        normalisation={"mean": [float(v) for v in normalisation["mean"]],
                       "std": [float(v) for v in normalisation["std"]]},
        precision="fp16" if fp16 else "fp32",
        stain=info.get("stain"),
        data_hash=info.get("data_hash"),
        fraction_hash=info.get("fraction_hash"),
        metrics=dict(info.get("metrics") or {}),
        histoeq_version=str(info.get("histoeq_version") or __version__),
    )


def _check_outputs(model: nn.Module, meta: ModelMetadata, source: str | Path | None) -> None:
    """Run the model on one blank tile: a tile size it cannot take or a class count that differs from its number of
    outputs is refused in a line, instead of a torch.export dump or a file that mislabels its probabilities."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, meta.tile_px, meta.tile_px))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise InputError(source, f"the model cannot run on {meta.tile_px} px tiles ({detail})") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != len(meta.classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(source, f"the model gives outputs of shape {shape} for one tile but the checkpoint names "
                                 f"{len(meta.classes)} classes")


def check_export_target(out: str | Path) -> Path:
    """The output must be a writable ``.onnx`` path: checked before minutes of loading, tracing and verifying."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError(out, "output must end in .onnx")
    return check_output_file(out)


def export_model(
    model: nn.Module,
    info: dict[str, Any],
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    idc_dir: Path | None = None,
    source: str | Path | None = None,
    operating_point: OperatingPoint | None = None,
    progress: ProgressFn = null_progress,
) -> ExportResult:
    """Export an in-memory model with its training `info` (checkpoint payload keys) to `out`, verified;
    `operating_point` (threshold and context chosen for the model) travels in the metadata for `predict`."""
    start = time.perf_counter()
    check_operating_point(operating_point)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise HistoeqError(f"--opset must be between {MIN_OPSET} (the exporter's own) and "
                           f"{onnx.defs.onnx_opset_version()} (this onnx's newest), got {opset}")
    out = check_export_target(out)
    meta = _model_metadata(model, info, fp16, source)
    if operating_point is not None:
        meta = ModelMetadata(**{**meta.__dict__, "operating_point": operating_point})
    _check_outputs(model, meta, source)
    mean, std = meta.normalisation["mean"], meta.normalisation["std"]
    progress("export", 0, 3, "tracing")
    classifier = build_classifier(model, mean, std, meta.tile_px, fp16=fp16)
    with tempfile.TemporaryDirectory(prefix="histoeq-export-") as tmp:
        raw_path = Path(tmp) / "model.onnx"
        export_graph(classifier, meta.tile_px, raw_path, opset)
        proto = onnx.load(str(raw_path))
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # the exporter keeps its own opset when its version conversion fails
        raise HistoeqError(f"--opset {opset}: the exporter could not convert this model's graph to it (it wrote "
                           f"opset {written}); use --opset {DEFAULT_OPSET}")
    progress("export", 1, 3, "verifying in onnxruntime")
    tiles, patches_source = check_patches(meta.tile_px, idc_dir=idc_dir)
    _set_metadata(proto, meta)
    verification = verify_onnx(
        proto.SerializeToString(), model, tiles, patches_source, mean, std, meta.group["name"], fp16
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


def check_operating_point(point: OperatingPoint | None) -> None:
    """Refuse an operating point the metadata parser would refuse later, before any export work."""
    problem = None if point is None else point.problem()
    if problem is not None:
        raise HistoeqError(f"operating point: {problem}")


def operating_point_from_options(threshold: float | None, context: str | None,
                                 chosen_by: str | None) -> OperatingPoint | None:
    """The operating point given as export options (``--threshold``, ``--context``, ``--chosen-by``), checked;
    None when none was given. A context or provenance without the threshold they belong to is refused."""
    if threshold is None:
        if context is not None or chosen_by is not None:
            raise HistoeqError("--context and --chosen-by describe an operating point; give its --threshold too")
        return None
    point = OperatingPoint(threshold, "none" if context is None else context, chosen_by or "")
    check_operating_point(point)
    return point


def _set_metadata(proto: onnx.ModelProto, meta: ModelMetadata) -> None:
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())


def metrics_from_eval(path: str | Path) -> dict[str, Any]:
    """The metrics of an `histoeq eval` result (its first run): the unrotated view, the mean over the evaluated
    angles and the label-change share, with the split and file they came from."""
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


def _metrics_from_evals(info: dict[str, Any], evals: dict[str, str | Path | None]) -> dict[str, Any]:
    metrics = dict(info.get("metrics") or {})
    for split, path in evals.items():
        if path is not None:
            metrics[split] = metrics_from_eval(path)
    return {**info, "metrics": metrics}


def export_run(
    run: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    idc_dir: Path | None = None,
    val_metrics: str | Path | None = None,
    test_metrics: str | Path | None = None,
    invariant_to: str | None = None,
    mpp: float | None = None,
    operating_point: OperatingPoint | None = None,
    progress: ProgressFn = null_progress,
) -> ExportResult:
    """Export the best checkpoint of a training run folder (or a checkpoint file), or several of them as one
    mean-probability ensemble (`load_ensemble`). ``val_metrics``/``test_metrics`` are eval.json files of the
    same model (for an ensemble: of its exported candidate) on held-out data, stored in the metadata; the
    validation entry replaces the run's own best-epoch validation metrics. ``invariant_to="d4"`` averages the
    model over the D4 views its group lacks (`histoeq.models.view_average`), so the file is exactly invariant to
    the 8 rotations and mirrors whatever the architecture. ``mpp`` states the µm/px of the training patches for
    runs whose dataset was imported without one (a run that has one must agree with it). ``operating_point`` is
    stored for `predict` (see `export_model`)."""
    check_operating_point(operating_point)
    runs = [run] if isinstance(run, str | Path) else list(run)
    if not runs:
        raise InputError(None, "no run to export")
    check_export_target(out)
    model, info = load_model(runs[0]) if len(runs) == 1 else load_ensemble(runs)
    if invariant_to is not None:
        try:
            wrapped = make_invariant(model, invariant_to)
        except ValueError as exc:
            raise InputError(None, str(exc)) from None
        if wrapped is not model:
            model, info = wrapped, {**info, "model_config": wrapped.config}
    if mpp is not None:
        if not (math.isfinite(mpp) and mpp > 0):
            raise InputError(None, f"--mpp must be a positive number of µm/px, got {mpp}")
        if info.get("mpp") is not None and not math.isclose(float(info["mpp"]), mpp, rel_tol=1e-6):
            raise InputError(runs[0], f"was trained at {info['mpp']} µm/px, not the {mpp} given")
        info = {**info, "mpp": float(mpp)}
    info = _metrics_from_evals(info, {"val": val_metrics, "test": test_metrics})
    source = runs[0] if len(runs) == 1 else ", ".join(map(str, runs))
    return export_model(model, info, out, opset=opset, fp16=fp16, idc_dir=idc_dir, source=source,
                        operating_point=operating_point, progress=progress)


_MUST_MATCH = ("classes", "tile_px", "mpp", "normalisation", "stain")


def load_ensemble(runs: Sequence[str | Path]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild several runs as one `ProbabilityEnsemble` with a combined checkpoint-like info dict.

    The members must agree on everything the exported graph fixes (classes, tile size, µm/px, the normalisation
    folded into the graph) and on their symmetry group; a member that does not is an `InputError` naming it.
    Hashes of training data and fractions are kept when all members share them."""
    loaded = [load_model(r) for r in runs]
    (first_model, first), first_path = loaded[0], runs[0]
    for (model, info), path in zip(loaded[1:], runs[1:], strict=True):
        for key in _MUST_MATCH:
            if info.get(key) != first.get(key):
                raise InputError(path, f"cannot join the ensemble: its {key} {info.get(key)!r} differs from "
                                       f"{first.get(key)!r} of {first_path}")
        if ProbabilityEnsemble.group_signature(model) != ProbabilityEnsemble.group_signature(first_model):
            raise InputError(path, f"cannot join the ensemble: its group differs from that of {first_path}")
    ensemble = ProbabilityEnsemble([m for m, _ in loaded]).eval()

    def shared(key: str) -> Any:
        values = {info.get(key) for _, info in loaded}
        return values.pop() if len(values) == 1 else None

    info = {key: first.get(key) for key in _MUST_MATCH}
    info.update(
        model_config=ensemble.config, data_hash=shared("data_hash"), fraction_hash=shared("fraction_hash"),
        metrics={"members": [{"run": str(r), **(i.get("metrics") or {})}
                             for r, (_, i) in zip(runs, loaded, strict=True)]},
        histoeq_version=__version__,
    )
    return ensemble, info
