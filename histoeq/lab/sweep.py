"""`histoeq sweep`: the models x data fractions x augmentations x seeds grid, trained and rotation-evaluated.

Each cell is an ordinary run folder under ``OUT/runs/`` plus a ``cell.json`` written (atomically) once the cell is
trained *and* evaluated, so a rerun skips finished cells and resumes an interrupted one from its last.pt. The test
split and its rotated views are prepared once and shared by all cells. Outputs:

* ``summary.csv``: one row per cell (test metrics at 0 degrees, averaged and worst over angles, invariance errors,
  AUC per angle, mean per-patient AUC and pooled AUC with patient-bootstrap 95 % intervals, and ``label_change_d4``: the
  share of patches whose label is not the same under all 8 D4 transforms, 4 rotations with and without a mirror; a rerun
  with ``--data`` adds it to cells finished without it);
* ``summary_groups.csv``: per (model, augment, fraction): number of seeds, mean, sd and 95 % t-interval of each
  metric, including ``val_auc`` (the best epoch's validation AUC; with ``--cv K`` seed s validates on patient
  fold s mod K of the train+val patients, so its mean over seeds is a K-fold cross-validation score, the one to
  select recipes by without touching the test split);
* ``oof.csv`` (with ``--cv K``): the out-of-fold predictions, one row per train+val patch and cell (model,
  augment, fraction, seed, fold, id, patient, x, y, label, class probabilities): each fold model's predictions on
  the patients it did not see, which every later choice reads (docs/protocol.md);
* ``claims.csv``: the claims C1/C2 as differences of means over seeds with Welch 95 % intervals, p-values and
  Holm-adjusted verdicts, and
  ``angle_spread.csv`` (C3), see :mod:`histoeq.evaluate.claims`;
* ``metric_vs_fraction.png`` (mean +- sd over seeds, one line per model and augmentation) and
  ``metric_vs_angle.png`` (at the largest fraction, mean +- sd over seeds).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from histoeq.data.dataset import PatchDataset
from histoeq.errors import HistoeqError, InputError
from histoeq.evaluate.claims import angle_spread, claim_comparisons
from histoeq.evaluate.plots import plot_metric_vs_angle, plot_metric_vs_fraction
from histoeq.evaluate.predictors import load_checkpoint_predictor
from histoeq.evaluate.rotation_eval import evaluate_predictor, prepare_inputs
from histoeq.progress import ProgressFn, null_progress
from histoeq.runs import runinfo
from histoeq.runs.checkpoint import BEST_NAME
from histoeq.runs.device import resolve_device
from histoeq.train.batches import parse_augment
from histoeq.train.config import RESUME_KEYS, TrainConfig, changed_options
from histoeq.train.models import available_models
from histoeq.train.trainer import VAL_PREDICTIONS, train

CELL_JSON = "cell.json"
OOF_CSV = "oof.csv"
GROUP_KEYS = ["model", "augment", "fraction"]
D4_LABEL_CHANGE = "label_change_d4"
GROUP_METRICS = ["val_auc", "auc_identity", "mean_patient_auc", "auc_mean_angles", "auc_min_angles",
                 "balanced_accuracy_mean_angles", "f1_mean_angles", "invariance_exact_mean",
                 "invariance_interpolated_mean", "label_change_fraction", D4_LABEL_CHANGE]


@dataclass
class SweepConfig:
    data: Path
    out: Path
    models: list[str]
    fractions: list[float]
    augments: list[str]
    seeds: int = 3
    first_seed: int = 0
    epochs: int = 20
    width: int | None = None
    match: str | None = None
    batch_size: int = 128
    lr: float = 1e-3
    patience: int = 5
    device: str = "auto"
    rotations: int = 8
    flips: bool = False
    split: str = "test"
    max_steps: int | None = None
    cv: int | None = None  # K: seed s validates on patient fold s mod K of train+val (histoeq.data.folds)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    warmup_epochs: float | None = None
    ema: float | None = None
    label_smoothing: float | None = None
    select: str | None = None  # "last" for a fixed budget (what cross-validation's OOF predictions need)

    def cv_fold(self, seed: int) -> str | None:
        return None if self.cv is None else f"{seed % self.cv}/{self.cv}"

    def check(self) -> None:
        unknown = [m for m in self.models if m not in available_models()]
        if unknown or not self.models:
            raise HistoeqError(f"unknown model {', '.join(unknown) or '(none given)'} "
                               f"(available: {', '.join(available_models())})")
        bad = [f for f in self.fractions if not (0.0 < f <= 1.0)]
        if bad or not self.fractions:
            raise HistoeqError(f"fractions must be in (0, 1], got {bad or 'none'}")
        for preset in self.augments or ["?"]:
            parse_augment(preset)
        if self.seeds < 1:
            raise HistoeqError(f"--seeds must be at least 1, got {self.seeds}")
        if self.first_seed < 0:
            raise HistoeqError(f"--first-seed must be at least 0, got {self.first_seed}")
        if self.cv is not None and self.cv < 2:
            raise HistoeqError(f"--cv must be at least 2 folds, got {self.cv}")
        if self.rotations < 1:  # checked here, not after the first cell has trained
            raise HistoeqError(f"--rotations must be at least 1, got {self.rotations}")


def cell_name(model: str, augment: str, fraction: float, seed: int) -> str:
    return f"{model}_{augment.replace('+', '-')}_f{fraction:g}_s{seed}"


def run_sweep(config: SweepConfig, progress: ProgressFn = null_progress) -> dict[str, Any]:
    """Run every missing cell, then (re)write the summaries and plots from all finished cells."""
    config.check()
    dataset = PatchDataset.open(config.data)
    dataset.split_ids("train")
    device = resolve_device(config.device)
    # Seed-major order: an interrupted sweep has whole seeds of every cell rather than all seeds of a few cells.
    seeds = range(config.first_seed, config.first_seed + config.seeds)
    cells = sorted(itertools.product(config.models, config.augments, config.fractions, seeds),
                   key=lambda cell: cell[3])
    out = Path(config.out)
    inputs = d4_inputs = None
    skipped = 0
    for i, (model, augment, fraction, seed) in enumerate(cells):
        run_dir = out / "runs" / cell_name(model, augment, fraction, seed)
        progress("sweep", i, len(cells), f"{run_dir.name}")
        train_config = TrainConfig(data=Path(config.data), model=model, out=run_dir,
                                   width=config.width, match=config.match, fraction=fraction, augment=augment,
                                   epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=seed,
                                   device=config.device, resume=True, patience=config.patience,
                                   max_steps=config.max_steps, cv_fold=config.cv_fold(seed),
                                   model_kwargs=dict(config.model_kwargs), warmup_epochs=config.warmup_epochs,
                                   ema=config.ema, label_smoothing=config.label_smoothing, select=config.select)
        if (run_dir / CELL_JSON).exists():
            # A finished cell counts as done only for the same training options; the dataset may have moved.
            saved = _read_damaged_hint(run_dir / runinfo.RUN_JSON).get("options", {})
            detail = changed_options(saved, train_config.options(), tuple(k for k in RESUME_KEYS if k != "data"))
            if detail:
                raise InputError(run_dir, f"finished with other options than this sweep's ({detail}); "
                                          "use another --out")
            skipped += 1
            cell = read_cell(run_dir / CELL_JSON)
            # Finished before the D4 share was part of a cell (and its checkpoint is still there to measure it).
            if D4_LABEL_CHANGE not in cell and (run_dir / BEST_NAME).exists():
                if d4_inputs is None:
                    d4_inputs = prepare_inputs(dataset, split=config.split, rotations=4, flips=True)
                cell[D4_LABEL_CHANGE] = d4_label_change(load_checkpoint_predictor(run_dir, device), d4_inputs)
                runinfo.write_json(run_dir / CELL_JSON, cell)
            continue
        train(train_config)
        if inputs is None:
            inputs = prepare_inputs(dataset, split=config.split, rotations=config.rotations, flips=config.flips)
        predictor = load_checkpoint_predictor(run_dir, device)
        result = evaluate_predictor(predictor.predict, inputs)
        runinfo.write_json(run_dir / "eval.json", {"data": str(config.data), "split": config.split,
                                                   "rotations": config.rotations, "flips": config.flips,
                                                   "context": inputs.context, "runs": [{"run": str(run_dir),
                                                                                        **result}]})
        run_json = runinfo.read_json(run_dir / runinfo.RUN_JSON)
        row = cell_row(model, augment, fraction, seed, run_json, result)
        row["cv_fold"] = train_config.cv_fold
        if config.flips and config.rotations % 4 == 0:  # the exact views of this evaluation already are D4
            row[D4_LABEL_CHANGE] = result["label_change_fraction_exact"]
        else:
            if d4_inputs is None:
                d4_inputs = prepare_inputs(dataset, split=config.split, rotations=4, flips=True)
            row[D4_LABEL_CHANGE] = d4_label_change(predictor, d4_inputs)
        runinfo.write_json(run_dir / CELL_JSON, row)
    progress("sweep", len(cells), len(cells), f"{len(cells) - skipped} trained, {skipped} already done")
    return write_summaries(out, [out / "runs" / cell_name(*c) for c in cells],
                           {"cells": len(cells), "skipped": skipped, "trained": len(cells) - skipped})


def summarize_sweep(out: Path) -> dict[str, Any]:
    """Rewrite the summaries and plots from every finished cell under ``OUT/runs``, training nothing.

    Several partial sweeps into one folder (say ``--models cnn --augment none,rot90`` then ``--models p4m``) each
    summarise only their own grid; this gathers all of them.
    """
    out = Path(out)
    run_dirs = sorted(path.parent for path in (out / "runs").glob(f"*/{CELL_JSON}"))
    return write_summaries(out, run_dirs, {"cells": len(run_dirs), "skipped": len(run_dirs), "trained": 0})


def gather_oof(run_dirs: list[Path]) -> pd.DataFrame | None:
    """The out-of-fold predictions of every finished cross-validation cell, or None when there are none."""
    parts = []
    for run_dir in run_dirs:
        cell_path, predictions = run_dir / CELL_JSON, run_dir / VAL_PREDICTIONS
        if not (cell_path.exists() and predictions.exists()):
            continue
        cell = read_cell(cell_path)
        if not cell.get("cv_fold"):
            continue
        table = pd.read_csv(predictions, dtype={"patient": str})
        keys = {"model": cell["model"], "augment": cell["augment"], "fraction": cell["fraction"],
                "seed": cell["seed"], "fold": int(str(cell["cv_fold"]).split("/")[0])}
        parts.append(table.assign(**keys)[[*keys, *table.columns]])
    return pd.concat(parts, ignore_index=True) if parts else None


def d4_label_change(predictor: Any, d4_inputs: Any) -> float:
    """Share of test patches whose predicted label differs somewhere over the 8 D4 transforms (``d4_inputs``:
    4 rotations with flips): zero by construction for p4m, not for se2 (SE(2) has no mirrors) nor for a CNN."""
    return float(evaluate_predictor(predictor.predict, d4_inputs)["label_change_fraction"])


def cell_row(model: str, augment: str, fraction: float, seed: int, run_json: dict[str, Any],
             result: dict[str, Any]) -> dict[str, Any]:
    """One flat summary row (a line of summary.csv) for a finished cell."""
    summary = result["summary"]
    best_val = run_json.get("result", {}).get("best_val", {})
    row = {
        "model": model, "augment": augment, "fraction": fraction, "seed": seed,
        "n_train": run_json.get("fraction", {}).get("n_train"), "epochs_run": run_json.get("result", {})
        .get("epochs_run"), "best_epoch": run_json.get("result", {}).get("best_epoch"),
        "val_auc": best_val.get("auc"),
        "auc_identity": summary["auc"]["identity"], "auc_mean_angles": summary["auc"]["mean"],
        "auc_min_angles": summary["auc"]["min"],
        "balanced_accuracy_identity": summary["balanced_accuracy"]["identity"],
        "balanced_accuracy_mean_angles": summary["balanced_accuracy"]["mean"],
        "f1_identity": summary["f1"]["identity"], "f1_mean_angles": summary["f1"]["mean"],
        "invariance_exact_mean": result["invariance"]["exact"]["mean"],
        "invariance_interpolated_mean": result["invariance"]["interpolated"]["mean"],
        "spread_exact": result["spread"]["exact"],
        "label_change_fraction": result["label_change_fraction"],
    }
    level = result.get("patient_level") or {}  # absent for multi-class tasks or a single test patient
    for name in ("mean_patient_auc", "pooled_auc", "pooled_balanced_accuracy", "pooled_f1"):
        estimate = level.get(name, {"value": None, "ci95": [None, None]})
        row[name] = estimate["value"]
        row[f"{name}_ci95_low"], row[f"{name}_ci95_high"] = estimate["ci95"]
    for view in result["views"]:
        row[f"auc_{view['view']}"] = view["auc"]
    return row


def group_stats(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and 95 % t-interval over seeds of each metric per (model, augment, fraction)."""
    records = []
    for key, part in cells.groupby(GROUP_KEYS, sort=True):
        rec: dict[str, Any] = dict(zip(GROUP_KEYS, key))
        rec["seeds"] = len(part)
        for metric in GROUP_METRICS:
            column = part[metric] if metric in part else pd.Series(dtype=np.float64)  # cells from older sweeps
            values = pd.to_numeric(column, errors="coerce").dropna().to_numpy(dtype=np.float64)
            mean = float(values.mean()) if values.size else float("nan")
            sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
            half = float(stats.t.ppf(0.975, values.size - 1) * sd / np.sqrt(values.size)) if values.size > 1 \
                else float("nan")
            rec.update({f"{metric}_mean": mean, f"{metric}_sd": sd, f"{metric}_ci95_low": mean - half,
                        f"{metric}_ci95_high": mean + half})
        records.append(rec)
    return pd.DataFrame.from_records(records)


CELL_KEYS = ("model", "augment", "fraction", "seed")


def read_cell(path: Path) -> dict[str, Any]:
    """One finished cell's record; a damaged one names the file and how to recover (retrain that cell)."""
    cell = _read_damaged_hint(path)
    missing = [k for k in CELL_KEYS if k not in cell]
    if missing:
        raise InputError(path, f"not a sweep cell record (no {', '.join(missing)}); delete {path.parent.name} "
                               "to retrain the cell")
    return cell


def _read_damaged_hint(path: Path) -> dict[str, Any]:
    try:
        return runinfo.read_json(path)
    except InputError as exc:
        raise InputError(path, f"{exc.problem}; delete {path.parent.name} to retrain the cell") from None


def write_summaries(out: Path, run_dirs: list[Path], counts: dict[str, int]) -> dict[str, Any]:
    rows = [read_cell(d / CELL_JSON) for d in run_dirs if (d / CELL_JSON).exists()]
    if not rows:
        raise HistoeqError(f"{out}: no finished sweep cells to summarise")
    cells = pd.DataFrame.from_records(rows).sort_values(["model", "augment", "fraction", "seed"])
    groups = group_stats(cells)
    runinfo.write_text_atomic(out / "summary.csv", cells.to_csv(index=False))
    runinfo.write_text_atomic(out / "summary_groups.csv", groups.to_csv(index=False))
    oof = gather_oof(run_dirs)
    if oof is not None:
        runinfo.write_text_atomic(out / OOF_CSV, oof.to_csv(index=False, float_format="%.7g"))
    claims = claim_comparisons(cells)
    runinfo.write_text_atomic(out / "claims.csv", claims.to_csv(index=False))
    runinfo.write_text_atomic(out / "angle_spread.csv", angle_spread(cells).to_csv(index=False))
    write_sweep_plots(out, cells, groups)
    return {"out": str(out), **counts, "finished": len(rows), "summary": str(out / "summary.csv"),
            "groups": groups.to_dict(orient="records"), "claims": claims.to_dict(orient="records")}


def write_sweep_plots(out: Path, cells: pd.DataFrame, groups: pd.DataFrame) -> None:
    """``metric_vs_fraction.png`` (per model and augmentation, with each point's seed count) and
    ``metric_vs_angle.png`` (at the largest fraction, mean ± sd over seeds) from the cell and group tables."""
    series = []
    for (model, augment), part in groups.groupby(["model", "augment"], sort=True):
        part = part.sort_values("fraction")
        series.append({"label": f"{model} / {augment}", "fractions": part["fraction"].tolist(),
                       "mean": part["auc_mean_angles_mean"].tolist(),
                       "sd": part["auc_mean_angles_sd"].tolist(), "seeds": part["seeds"].tolist()})
    plot_metric_vs_fraction(series, out / "metric_vs_fraction.png", "test AUC (mean over angles)")
    angle_cols = [c for c in cells.columns if c.startswith("auc_") and c[4:].lstrip("m").replace(".", "").isdigit()]
    top = cells[cells["fraction"] == cells["fraction"].max()]
    angle_series = []
    for (model, augment), part in top.groupby(["model", "augment"], sort=True):
        for mirrored in (False, True):
            cols = [c for c in angle_cols if c[4:].startswith("m") == mirrored]
            if not cols:
                continue
            values = part[cols].astype(float)
            angle_series.append({"label": f"{model} / {augment}" + (" (mirrored)" if mirrored else ""),
                                 "mirrored": mirrored, "angles": [float(c[4:].lstrip("m")) for c in cols],
                                 "values": values.mean().tolist(), "sd": values.std(ddof=1).tolist(),
                                 "seeds": len(part)})
    plot_metric_vs_angle(angle_series, out / "metric_vs_angle.png", "test AUC",
                         f"test AUC vs angle at fraction {cells['fraction'].max():g} (mean ± sd over seeds)")
