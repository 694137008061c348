"""`histoeq eval`: evaluate one or more runs (or exported models) under rotations and write the report.

Writes ``eval.json`` (settings, context used, and per run the result of `evaluate_predictor`, with per-patient
metrics), ``auc_vs_angle.png``, ``roc.png``, ``pr.png``, ``calibration.png`` (the unrotated view, `curves`) and
``predictions.csv`` (every patch's probabilities in the unrotated view) into the output folder as one set: all or
none, eval.json renamed into place last so its presence marks a complete report; the CLI prints the tables.

Runs that differ only in their seed (same training options in their ``run.json``) are drawn as one line with
mean ± sd error bars on the angle plot; each keeps its own curve elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoeq.atomic import atomic_paths, check_output_dir
from histoeq.data.dataset import PatchDataset
from histoeq.data.stain import dataset_stain, normalise_groups
from histoeq.errors import HistoeqError, InputError
from histoeq.evaluate.curves import calibration_figure, pr_figure, roc_figure, scored_run
from histoeq.evaluate.plots import metric_vs_angle_figure, write_png
from histoeq.evaluate.predictors import CHECKPOINT_LOADERS, Predictor, PredictorLoader, load_predictor
from histoeq.evaluate.rotation_eval import TTA_CHOICES, EvalInputs, NonFiniteOutput, evaluate_predictor, prepare_inputs
from histoeq.progress import ProgressFn, null_progress
from histoeq.runs.device import resolve_device
from histoeq.runs.runinfo import write_json
from histoeq.slide.context import NO_CONTEXT, context_kernel

EVAL_JSON = "eval.json"
PLOT_NAME = "auc_vs_angle.png"
CURVE_PLOTS = {"roc.png": roc_figure, "pr.png": pr_figure, "calibration.png": calibration_figure}
PREDICTIONS_CSV = "predictions.csv"


def angle_series(results: Sequence[tuple[str, dict[str, Any]]], metric: str = "auc",
                 replicates: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
    """Plot series per run and mirroring. Runs with the same non-None `replicates` key (seeds of one recipe) are
    merged into one series: mean and sd (ddof=1) over them per angle, labelled with their model's name."""
    keys = list(replicates) if replicates is not None else [None] * len(results)
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(("group", key) if key is not None else ("run", i), []).append(i)
    series = []
    for members in groups.values():
        label = results[members[0]][0]
        if len(members) > 1:  # named by the recipe, not by one of its runs
            label = (results[members[0]][1].get("model_config") or {}).get("name") or f"{label} and alike"
        for mirrored in (False, True):
            tables = [[r for r in results[i][1]["views"] if r["mirrored"] == mirrored] for i in members]
            if not tables[0]:
                continue
            values = np.array([[r[metric] for r in rows] for rows in tables], dtype=np.float64)
            invariance = np.array([[r["invariance_mean"] for r in rows] for rows in tables], dtype=np.float64)
            entry = {"label": label + (" (mirrored)" if mirrored else ""), "mirrored": mirrored,
                     "angles": [r["angle"] for r in tables[0]], "values": values.mean(axis=0).tolist(),
                     "invariance": invariance.mean(axis=0).tolist()}
            if len(members) > 1:
                entry.update(sd=values.std(axis=0, ddof=1).tolist(), seeds=len(members))
            series.append(entry)
    return series


_PER_SEED_OPTIONS = {"seed", "out", "device", "resume", "num_workers"}


def replicate_key(run: str | Path) -> str | None:
    """The training options of a run folder (or its ``.pt``) apart from seed and where/how it ran: equal keys mean
    seeds of one recipe. None for anything without a readable ``run.json`` (an exported model)."""
    path = Path(run)
    folder = path if path.is_dir() else path.parent if path.suffix == ".pt" else None
    if folder is None:
        return None
    try:
        options = json.loads((folder / "run.json").read_text())["options"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(options, dict):
        return None
    return json.dumps({k: v for k, v in options.items() if k not in _PER_SEED_OPTIONS}, sort_keys=True,
                      default=str)


def evaluate_runs(runs: Sequence[str | Path], data: str | Path, out: str | Path, *, split: str = "test",
                  rotations: int = 8, flips: bool = False, tta: str | None = None, slides: Path | None = None,
                  device: str = "auto", batch_size: int = 512, limit: int | None = None,
                  context: str | None = NO_CONTEXT, threshold: float | None = None,
                  loaders: Mapping[str, PredictorLoader] = CHECKPOINT_LOADERS,
                  progress: ProgressFn = null_progress) -> dict[str, Any]:
    """Evaluate each run on `split` of `data` at N rotations (and mirrors); write eval.json and the plot.

    With a ``context`` kernel, metrics are of each patch's probability combined with its slide neighbours'
    (`histoeq.slide.context`), with the patch-only figures kept beside them; None takes the kernel of the models'
    operating points (the one `histoeq predict` applies), when they agree and the index has tile positions, else
    none, and the record says where it came from. Binary labels are p(positive) at or
    above ``threshold``; None takes each model's own operating point (an exported model that carries one, see
    `histoeq.export.metadata.OperatingPoint`), else 0.5, and each run records the threshold and where it came
    from. `loaders` opens model files by suffix (`load_predictor`); run folders are always checkpoints."""
    if not runs:
        raise InputError(None, "no run folder or model given")
    if (tta or "none") not in TTA_CHOICES:
        raise HistoeqError(f"unknown --tta {tta!r} (choose from {', '.join(TTA_CHOICES)})")
    if rotations < 1:
        raise HistoeqError(f"--rotations must be at least 1, got {rotations}")
    if batch_size < 1:
        raise HistoeqError(f"--batch-size must be at least 1, got {batch_size}")
    if context is not None and context != NO_CONTEXT:
        context_kernel(context)
    if threshold is not None and not 0 < threshold < 1:  # NaN fails both comparisons
        raise HistoeqError(f"--threshold must be in (0, 1), got {threshold}")
    if slides is not None and not Path(slides).is_dir():  # a typo would go unnoticed when every view is exact
        raise InputError(slides, "--slides is not a folder" if Path(slides).exists() else "no such --slides folder")
    out = Path(out)
    check_output_dir(out)  # before minutes of evaluation, not after
    for name in (PLOT_NAME, *CURVE_PLOTS, PREDICTIONS_CSV, EVAL_JSON):
        if (out / name).is_dir():
            raise InputError(out / name, "cannot write the output: is a directory")
    torch_device = resolve_device(device)
    predictors = [load_predictor(r, torch_device, loaders) for r in runs]  # fail fast on a bad run before heavy work
    dataset = PatchDataset.open(data)
    for p in predictors:
        if p.tile_px is not None and p.tile_px != dataset.tile_px:
            raise InputError(p.name, f"model was trained on {p.tile_px} px tiles but {data} has "
                                     f"{dataset.tile_px} px tiles")
        classes = p.info.get("classes")
        if classes is not None and len(classes) != len(dataset.classes):  # its probabilities would be misread
            raise InputError(p.name, f"model has {len(classes)} classes ({', '.join(map(str, classes))}) but {data} "
                                     f"has {len(dataset.classes)} ({', '.join(dataset.classes)})")
    inputs = prepare_inputs(dataset, split=split, rotations=rotations, flips=flips, slides=slides, limit=limit,
                            progress=progress)
    context, context_source = _context_for(predictors, context, inputs)
    if context_source == "option" and context != NO_CONTEXT:
        _check_positions(inputs, data, context)
    stain = _normalise_stain(inputs, predictors, dataset.meta)
    results, probabilities, context_probabilities = [], [], []
    for i, p in enumerate(predictors):
        run_threshold, threshold_source = _threshold_for(p, threshold)
        try:
            result = evaluate_predictor(p.predict, inputs, tta=tta, batch_size=batch_size, progress=progress,
                                        task=f"eval {i + 1}/{len(predictors)}", keep_probabilities=True,
                                        context=context, threshold=run_threshold)
        except NonFiniteOutput as exc:
            raise InputError(p.name, f"model {exc}") from None
        probabilities.append(result.pop("probabilities"))
        context_probabilities.append(result.pop("context_probabilities", None))
        results.append({"run": p.name, **p.info, **result, "threshold_source": threshold_source})
    record = {"data": str(data), "split": split, "rotations": rotations, "flips": flips, "tta": tta or "none",
              "context": inputs.context, "spatial_context": context, "spatial_context_source": context_source,
              "n": int(len(inputs.labels)), "stain": stain,
              "runs": results}
    labels = [_short_label(r["run"], r.get("model_config")) for r in results]
    rotation_context = inputs.context.split(" (")[0]
    title = f"AUC vs rotation ({split}" + ("" if rotation_context == "not needed" else f", {rotation_context}") + ")"
    table = predictions_table(inputs, [r["run"] for r in results], probabilities, dataset.classes,
                              context_probabilities, context)
    positive = dataset.classes[1] if len(dataset.classes) == 2 else dataset.classes[-1]
    scored = [scored_run(label, inputs.labels, probs) for label, probs in zip(labels, probabilities)]
    figures = {PLOT_NAME: lambda: metric_vs_angle_figure(
        angle_series(list(zip(labels, results)), "auc", [replicate_key(r["run"]) for r in results]), "auc", title)}
    view = f"{split}, unrotated view"
    titles = {"roc.png": f"ROC ({view})", "pr.png": f"precision-recall ({view})",
              "calibration.png": f"calibration ({view})"}
    figures.update({name: (lambda make=make, name=name: make(scored, positive, titles[name]))
                    for name, make in CURVE_PLOTS.items()})
    with atomic_paths([out / name for name in figures] + [out / PREDICTIONS_CSV, out / EVAL_JSON], suffix=".png") \
            as (*plot_tmps, csv_tmp, json_tmp):
        for (name, make), plot_tmp in zip(figures.items(), plot_tmps):
            try:
                write_png(make(), plot_tmp)
            except OSError as exc:
                raise InputError(out / name, f"cannot write the output ({exc.strerror or exc})") from None
        try:
            table.to_csv(csv_tmp, index=False, float_format="%.6g")
        except OSError as exc:
            raise InputError(out / PREDICTIONS_CSV, f"cannot write the output ({exc.strerror or exc})") from None
        try:
            write_json(json_tmp, record)
        except (OSError, InputError) as exc:  # InputError names the temporary name: name the real one
            problem = exc.problem if isinstance(exc, InputError) else f"cannot write the output ({exc.strerror})"
            raise InputError(out / EVAL_JSON, problem) from None
    record["files"] = {"json": str(out / EVAL_JSON), "plot": str(out / PLOT_NAME),
                       **{name.removesuffix(".png"): str(out / name) for name in CURVE_PLOTS},
                       "predictions": str(out / PREDICTIONS_CSV)}
    return record


def _check_positions(inputs: EvalInputs, data: str | Path, context: str) -> None:
    """Spatial context needs each patch's x, y, distinct within its slide: refused before any model runs."""
    problem = _positions_problem(inputs)
    if problem:
        raise InputError(data, f"--context {context} needs tile positions x, y{problem}")


def _positions_problem(inputs: EvalInputs) -> str | None:
    """Why the index's tile positions cannot place patches on a grid (the end of a sentence), or None."""
    import pandas as pd

    if inputs.positions is None or inputs.slides is None:
        return " and the dataset index has none"
    keys = pd.DataFrame({"slide": inputs.slides, "x": inputs.positions[:, 0], "y": inputs.positions[:, 1]})
    if keys.duplicated().any():
        return ", and several patches of one slide share a position (an index without positions?)"
    return None


def predictions_table(inputs: EvalInputs, runs: Sequence[str], probabilities: Sequence[Any],
                      classes: Sequence[str], context_probabilities: Sequence[Any] | None = None,
                      context: str = NO_CONTEXT) -> Any:
    """One row per run and patch of the unrotated view: run, id, patient, label, prob_<class>..., so any other
    metric (another threshold, a per-slide figure) can be computed from the file without rerunning the models.
    prob_<class> is always the model's patch-only output; with a context kernel, prob_<class>_<kernel> holds the
    probabilities combined with the neighbours'."""
    frames = []
    for run, probs in zip(runs, probabilities, strict=True):
        probs = np.asarray(probs).reshape(len(inputs.labels), -1)
        if probs.shape[1] == 1 and len(classes) == 2:  # a predictor that returns p(positive) only
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        frame = pd.DataFrame({"run": run, "id": inputs.ids if inputs.ids is not None else np.arange(len(probs)),
                              "patient": inputs.patients if inputs.patients is not None else "",
                              "label": inputs.labels})
        for j, name in enumerate(classes[:probs.shape[1]]):
            frame[f"prob_{name}"] = probs[:, j]
        combined = None if context_probabilities is None else context_probabilities[len(frames)]
        if combined is not None:
            combined = np.asarray(combined).reshape(len(inputs.labels), -1)
            if combined.shape[1] == 1 and len(classes) == 2:
                combined = np.concatenate([1.0 - combined, combined], axis=1)
            for j, name in enumerate(classes[:combined.shape[1]]):
                frame[f"prob_{name}_{context}"] = combined[:, j]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _normalise_stain(inputs: EvalInputs, predictors: Sequence[Predictor], dataset_meta: dict[str, Any]
                     ) -> dict[str, Any] | None:
    """Models trained on stain-normalised patches see the evaluated patches normalised the same way: per patient
    (a patient's patches stand for its slide), unless the dataset already carries that very normalisation."""
    wanted = {json.dumps(p.stain, sort_keys=True) for p in predictors}
    if len(wanted) > 1:
        raise InputError(None, "these models expect different stain normalisation (histoeq normalise); evaluate "
                               "them in separate runs")
    stain = predictors[0].stain
    if stain is None:
        return None
    have = dataset_stain(dataset_meta)
    if have is not None and have.get("reference") == stain.get("reference"):
        return {"method": stain.get("method"), "applied": "by the dataset (histoeq normalise)"}
    images = inputs.images.numpy()
    companions = () if inputs.contexts is None else (inputs.contexts.numpy(),)
    patients = inputs.patients if inputs.patients is not None else np.zeros(len(images), dtype=int)
    unchanged = normalise_groups(images, patients, stain, companions)
    return {"method": stain.get("method"), "applied": "per patient, by eval", "unchanged": unchanged}


def _context_for(predictors: Sequence[Predictor], context: str | None, inputs: EvalInputs) -> tuple[str, str]:
    """The context kernel every run is scored with and its source.

    The option wins. Otherwise the models' operating points decide, since their thresholds were chosen for
    probabilities combined with that kernel: scoring them patch-only at that threshold would report figures no
    `histoeq predict` user gets. Models that disagree, or an index without usable tile positions, fall back to
    none, and the source says why."""
    if context is not None:
        return context, "option"
    kernels = {(p.info.get("operating_point") or {}).get("context", NO_CONTEXT) for p in predictors}
    kernels.discard(NO_CONTEXT)
    if not kernels:
        return NO_CONTEXT, "default"
    if len(kernels) > 1:
        return NO_CONTEXT, f"default (the models' operating points differ: {', '.join(sorted(kernels))})"
    (kernel,) = kernels
    problem = _positions_problem(inputs)
    if problem:
        return NO_CONTEXT, f"default (the model's {kernel} needs tile positions x, y{problem})"
    return kernel, "model"


def _threshold_for(predictor: Predictor, threshold: float | None) -> tuple[float, str]:
    """The threshold a run is scored at and its source: the option, the model's operating point, or 0.5."""
    if threshold is not None:
        return float(threshold), "option"
    point = predictor.info.get("operating_point")
    if point is not None:
        return float(point["threshold"]), "model"
    return 0.5, "default"


def _short_label(run: str, config: dict[str, Any] | None) -> str:
    name = (config or {}).get("name")
    return f"{Path(run).name} ({name})" if name else Path(run).name
