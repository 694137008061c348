"""`histoeq train`, `histoeq eval`, `histoeq sweep`, `histoeq bench train`: parse, call one library function, print."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from histoeq.cli import OVERWRITE_HELP, app, bench_app, refuse_existing
from histoeq.errors import HistoeqError

_MODEL_HELP = "Model name, e.g. cnn, p4m, se2, se2_c16, se2_d8 (all in `histoeq models`)."
_DEVICE_HELP = "auto (CUDA when available), cpu or cuda."


# Recipe options shared by train and sweep (one definition, so their help cannot drift apart).
_WARMUP_EPOCHS = typer.Option(None, "--warmup-epochs", help="Linear learning-rate warm-up over this "
                              "many epochs before the cosine decay (off when omitted).")
_EMA = typer.Option(None, "--ema", help="Decay of an exponential moving average of the weights (e.g. "
                    "0.999), which is validated, saved and exported (off when omitted).")
_LABEL_SMOOTHING = typer.Option(None, "--label-smoothing", help="Label smoothing of the training loss "
                                "(e.g. 0.1; off when omitted).")
_SELECT = typer.Option(None, "--select", help="best: the best-val-AUC epoch, with early stopping "
                       "(default); last: the end of the fixed epoch budget (cross-validation).")


def refuse_orientations(orientations: int | None) -> None:
    """The orientation count is part of a model's name now (se2 is C8): say which name to use instead."""
    if orientations is not None:
        raise HistoeqError("--orientations is no longer an option: choose the group by the model's name (se2 is "
                           "C8; se2_c4, se2_c16, se2_d8; see histoeq models)")


class Invariance(str, Enum):
    """Values of --invariant-to (eval and export)."""

    none = "none"
    d4 = "d4"


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


_TRAIN_EPILOG = """\
[bold]Examples[/bold]

  # p4m on 25% of the IDC train split, no augmentation, CPU
  histoeq train --data idc --model p4m --fraction 0.25 --epochs 20 \\
      --out runs/p4m-f0.25

  # the CNN baseline with all 8 D4 transforms and stain jitter, on a GPU
  histoeq train --data idc --model cnn --augment rot90+stain \\
      --device cuda --out runs/cnn-rot90

  # fold 2 of a 5-fold patient cross-validation over the train+val
  # patients (test untouched)
  histoeq train --data idc --model p4m --cv-fold 2/5 --out runs/p4m-cv2

  # the final model of a cross-validated recipe: every train and val
  # patient, the fixed budget, no validation
  histoeq train --data idc --model p4m --epochs 8 --select last \\
      --train-on train+val --out runs/p4m-final

  # continue an interrupted run exactly
  histoeq train --data idc --model p4m --out runs/p4m-f0.25 \\
      --fraction 0.25 --epochs 20 --resume

  # train on 2 GPUs; se2_c16 is se2 with 16 orientations
  torchrun --nproc-per-node 2 -m histoeq train --data idc \\
      --model se2_c16 --out runs/se2-c16

  # a batch job: plain progress lines in the log, epochs as JSON lines
  histoeq --log-json runs/p4m.jsonl train --data idc --model p4m \\
      --out runs/p4m
"""


@app.command("train", epilog=_TRAIN_EPILOG)
def train_command(
    data: Path = typer.Option(..., "--data", help="Dataset folder (histoeq import / extract)."),
    model: str = typer.Option(..., "--model", help=_MODEL_HELP),
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoints, metrics.jsonl, run.json)."),
    orientations: int = typer.Option(None, "--orientations", hidden=True),
    width: int = typer.Option(None, "--width", help="Baseline first-stage channels (model default when omitted)."),
    match: str = typer.Option(None, "--match", help="G-CNN sizing: params (default) or width."),
    fraction: float = typer.Option(1.0, "--fraction", help="Fraction of the train split, in (0, 1]."),
    augment: str = typer.Option("none", "--augment", help="none, flip, rot90, rotate, stain, hed (stain-intensity "
                                "jitter), combined with '+'."),
    epochs: int = typer.Option(20, "--epochs"),
    batch_size: int = typer.Option(128, "--batch-size", help="Global batch (split over torchrun processes)."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW peak learning rate (cosine decay per step)."),
    weight_decay: float = typer.Option(1e-4, "--weight-decay"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    workers: int = typer.Option(0, "--workers", help="Threads for per-patch (rotate/stain) augmentation."),
    patience: int = typer.Option(5, "--patience", help="Stop after this many epochs without a better val AUC."),
    max_steps: int = typer.Option(None, "--max-steps", help="Cap on optimizer steps per epoch (smoke tests)."),
    cv_fold: str = typer.Option(None, "--cv-fold", help="i/k: validate on patient fold i of k over the train+val "
                                "patients, train on the others (test untouched)."),
    warmup_epochs: float = _WARMUP_EPOCHS,
    ema: float = _EMA,
    label_smoothing: float = _LABEL_SMOOTHING,
    select: str = _SELECT,
    train_on: str = typer.Option(None, "--train-on", help="train (default) or train+val: every train and val "
                                 "patient, no validation (a cross-validated recipe's final model; needs "
                                 "--select last)."),
) -> None:
    """Train a model on the train split, validating every epoch; best.pt is chosen by validation AUC.

    Multi-GPU / multi-process: torchrun --nproc-per-node N -m histoeq train ... (rank 0 writes the run folder).
    """
    from histoeq.cli._render import print_table, rich_progress
    from histoeq.train.config import TrainConfig
    from histoeq.train.trainer import train

    refuse_orientations(orientations)
    config = TrainConfig(data=data, model=model, out=out, width=width, match=match,
                         fraction=fraction, augment=augment, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, seed=seed, device=device, resume=resume,
                         num_workers=workers, patience=patience, max_steps=max_steps, cv_fold=cv_fold,
                         warmup_epochs=warmup_epochs, ema=ema, label_smoothing=label_smoothing, select=select,
                         train_on=train_on)
    with rich_progress() as progress:
        result = train(config, progress=progress)
    if result.get("world_size", 1) > 1 and not _is_rank0():
        return
    best = result["best_val"]
    print_table(f"histoeq train: {out}", ["Status", "Epochs", "Best epoch", "val AUC", "val bal. acc",
                                          "s/epoch (train)"],
                [[result["status"], result["epochs_run"], result["best_epoch"], best.get("auc", float("nan")),
                  best.get("balanced_accuracy", float("nan")), result["train_seconds_per_epoch"] or float("nan")]])


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


_EVAL_EPILOG = """\
[bold]Examples[/bold]

  # two runs on the test split at 8 angles (45° steps) and their mirrors
  histoeq eval runs/cnn runs/p4m --data idc --split test --rotations 8 \\
      --flips --out eval/

  # the shipped ONNX model, and the CNN remedy for comparison: average
  # over the 8 D4 transforms
  histoeq eval models/idc-se2.onnx --data idc --out eval-onnx/
  histoeq eval runs/cnn --data idc --invariant-to d4 --out eval-d4/
"""


@app.command("eval", epilog=_EVAL_EPILOG)
def eval_command(
    runs: list[Path] = typer.Argument(..., help="Run folders (their best.pt), checkpoints, or exported models."),
    data: Path = typer.Option(..., "--data", help="Dataset folder."),
    out: Path = typer.Option(..., "--out", help="Output folder for eval.json, the plots and predictions.csv."),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    rotations: int = typer.Option(8, "--rotations", help="N: evaluate at angles k*360/N."),
    flips: bool = typer.Option(False, "--flips", help="Also evaluate every angle after a mirror."),
    invariant_to: Invariance = typer.Option(
        "none", "--invariant-to",
        help="d4: average the probabilities over the 8 rotations/mirrors of D4, making every model exactly "
        "D4-invariant."),
    slides: Path = typer.Option(None, "--slides", help="Folder with the source slides, for real rotation context."),
    context: str | None = typer.Option(
        None, "--context", help="Combine each patch's probability with its slide neighbours' (index x, y): none, "
        "box3, binomial3 or binomial5. Patch-only figures are reported beside. Default: the kernel of the models' "
        "operating points (the one predict applies) when the index has x, y, else none.",
        show_default="from the model, else none"),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Binary tasks: a patch is positive when p(positive) is at or above this, for "
        "accuracy, balanced accuracy, F1 and label changes. Default: an exported model's operating point (the "
        "threshold chosen for it and stored at export), else 0.5.", show_default="from the model, else 0.5"),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    batch_size: int = typer.Option(512, "--batch-size"),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Evaluate runs under rotations (and mirrors): metrics per angle, invariance error, label changes."""
    from histoeq.cli._render import console, print_table, rich_progress
    from histoeq.evaluate.report import EVAL_JSON, evaluate_runs
    from histoeq.lab.model_files import PREDICTOR_LOADERS

    refuse_existing([out / EVAL_JSON], overwrite)

    with rich_progress(transient=True) as progress:
        record = evaluate_runs(runs, data, out, split=split, rotations=rotations, flips=flips, tta=invariant_to.value,
                               slides=slides, device=device, batch_size=batch_size, context=context,
                               threshold=threshold, loaders=PREDICTOR_LOADERS, progress=progress)
    for result in record["runs"]:
        rows = [[r["view"], r["exact"], r["auc"], r["accuracy"], r["balanced_accuracy"], r["f1"],
                 r["invariance_mean"], r["invariance_max"]] for r in result["views"]]
        print_table(f"{result['run']} on {split} (n={result['n']}, tta={record['tta']}, "
                    f"context={record['spatial_context']} ({record['spatial_context_source']}), "
                    f"threshold={result['threshold']:g} ({result['threshold_source']}))",
                    ["View (deg)", "Exact", "AUC", "Acc", "Bal. acc", "F1", "|dp| mean", "|dp| max"], rows)
        inv = result["invariance"]
        console.print(f"invariance exact: mean {_fmt(inv['exact']['mean'])} max {_fmt(inv['exact']['max'])}; "
                      f"interpolated: mean {_fmt(inv['interpolated']['mean'])} max "
                      f"{_fmt(inv['interpolated']['max'])}; D4 spread {result['spread']['exact']:.3g}; "
                      f"label changes {result['label_change_fraction']:.2%}")
        level = result.get("patient_level")
        if level:
            console.print(f"patient level ({level['patients']} patients, 95 % patient-bootstrap intervals): "
                          f"mean per-patient AUC {_estimate(level['mean_patient_auc'])}; pooled AUC "
                          f"{_estimate(level['pooled_auc'])}, bal. acc "
                          f"{_estimate(level.get('pooled_balanced_accuracy'))}, F1 {_estimate(level.get('pooled_f1'))}")
        patch = result.get("patch_only")
        if patch:
            line = (f"patch-only (without context): AUC {patch['auc']:.4f}, bal. acc {patch['balanced_accuracy']:.4f}, "
                    f"F1 {patch['f1']:.4f}")
            if patch.get("patient_level"):
                line += f"; mean per-patient AUC {_estimate(patch['patient_level']['mean_patient_auc'])}"
            console.print(line)
        patients = result.get("per_patient") or []
        if len(patients) > 1:
            print_table(f"{result['run']} per patient (unrotated)", ["Patient", "Patches", "Positives",
                        "Mean p", "AUC", "Bal. acc", "F1"],
                        [[r["patient"], r["n"], r["positives"], r["mean_score"], r["auc"], r["balanced_accuracy"],
                          r["f1"]] for r in patients])
    if any(math.isnan(r["auc"]) for result in record["runs"] for r in result["views"]):
        console.print(f"note: AUC is undefined (nan) because not every class occurs in the {split} split")
    if record["spatial_context_source"].startswith("default ("):
        console.print(f"note: no spatial context: {record['spatial_context_source'][len('default ('):-1]}")
    console.print(f"rotation context: {record['context']}")
    files = record["files"]
    plots = ", ".join(files[k] for k in ("plot", "roc", "pr", "calibration") if k in files)
    console.print(f"wrote {files['json']}, {plots} and {files['predictions']}")


def _estimate(estimate: dict[str, Any] | None) -> str:
    """'value [low, high]' of a patient-level estimate in eval.json ('n/a' where undefined)."""
    if not estimate or estimate["value"] is None or math.isnan(estimate["value"]):
        return "n/a"
    low, high = estimate["ci95"]
    return f"{estimate['value']:.4f} [{low:.4f}, {high:.4f}]"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


_SWEEP_EPILOG = """\
[bold]Examples[/bold]

  # the data-efficiency experiment; rerun the same command to resume
  histoeq sweep --data idc --models cnn,p4m,se2 \\
      --fractions 1,0.5,0.25,0.1 --augment none,rot90 --seeds 3 \\
      --epochs 20 --device cuda --out sweeps/idc

  # a second grid into the same folder, then one summary over every
  # finished cell of both
  histoeq sweep --data idc --models se2 --augment rot90 --epochs 20 \\
      --device cuda --out sweeps/idc
  histoeq sweep --out sweeps/idc --report-only

  # choose between recipes by 5-fold patient cross-validation over
  # train+val (the "val AUC" column)
  histoeq sweep --data idc --models p4m --augment none,stain \\
      --fractions 1 --seeds 5 --cv 5 --out sweeps/cv

  # the recipe of docs/protocol.md: fixed budget, last weights, weight
  # average; writes oof.csv
  histoeq sweep --data idc --models p4m --width 8 --augment none \\
      --fractions 1 --seeds 5 --cv 5 --epochs 8 --select last \\
      --warmup-epochs 1 --ema 0.999 --out sweeps/cv-r1
"""


@app.command("sweep", epilog=_SWEEP_EPILOG)
def sweep_command(
    data: Path = typer.Option(None, "--data", help="Dataset folder (required unless --report-only)."),
    out: Path = typer.Option(..., "--out", help="Sweep folder (runs/, summary.csv, plots); rerun to resume."),
    models: str = typer.Option("cnn,p4m,se2", "--models", help="Comma-separated model names."),
    fractions: str = typer.Option("1,0.5,0.25,0.1", "--fractions", help="Comma-separated fractions in (0, 1]."),
    augment: str = typer.Option("none,rot90", "--augment", help="Comma-separated augmentation presets."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per cell: FIRST..FIRST+N-1."),
    first_seed: int = typer.Option(0, "--first-seed", help="First seed (split one grid over several processes)."),
    epochs: int = typer.Option(20, "--epochs"),
    width: int = typer.Option(None, "--width"),
    match: str = typer.Option(None, "--match"),
    orientations: int = typer.Option(None, "--orientations", hidden=True),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    patience: int = typer.Option(5, "--patience"),
    rotations: int = typer.Option(8, "--rotations", help="Test-split evaluation at angles k*360/N."),
    flips: bool = typer.Option(False, "--flips"),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
    max_steps: int = typer.Option(None, "--max-steps", help="Cap on optimizer steps per epoch (smoke tests)."),
    cv: int = typer.Option(None, "--cv", help="K: seed s validates on patient fold s mod K of the train+val "
                           "patients; the mean val AUC over seeds is then a K-fold CV score (use --seeds K)."),
    warmup_epochs: float = _WARMUP_EPOCHS,
    ema: float = _EMA,
    label_smoothing: float = _LABEL_SMOOTHING,
    select: str = _SELECT,
    report_only: bool = typer.Option(False, "--report-only",
                                     help="Train nothing: rewrite summaries and plots from every finished cell in "
                                          "OUT/runs (gathers several partial sweeps into one folder)."),
) -> None:
    """Train and rotation-evaluate every (model, fraction, augmentation, seed) cell; finished cells are skipped."""
    from histoeq.cli._render import rich_progress
    from histoeq.errors import HistoeqError
    from histoeq.lab.sweep import SweepConfig, run_sweep, summarize_sweep

    if report_only:
        _print_sweep(out, summarize_sweep(out))
        return
    if data is None:
        raise HistoeqError("sweep: --data is required unless --report-only")
    try:
        fraction_values = [float(f) for f in _csv(fractions)]
    except ValueError:
        raise HistoeqError(f"--fractions must be comma-separated numbers, got {fractions!r}") from None
    refuse_orientations(orientations)
    config = SweepConfig(data=data, out=out, models=_csv(models), fractions=fraction_values, augments=_csv(augment),
                         seeds=seeds, first_seed=first_seed, epochs=epochs, width=width, match=match,
                         batch_size=batch_size, lr=lr, patience=patience, device=device,
                         rotations=rotations, flips=flips, max_steps=max_steps, cv=cv, warmup_epochs=warmup_epochs,
                         ema=ema, label_smoothing=label_smoothing, select=select)
    with rich_progress() as progress:
        result = run_sweep(config, progress=progress)
    _print_sweep(out, result)


def _pm(sd: float) -> str:
    return "" if math.isnan(sd) else f" ± {sd:.4f}"  # the sd of a single seed is NaN


def _print_sweep(out: Path, result: dict) -> None:
    from histoeq.cli._render import console, print_table

    rows = [[g["model"], g["augment"], g["fraction"], g["seeds"],
             f"{g['val_auc_mean']:.4f}" + _pm(g["val_auc_sd"]),
             f"{g['auc_mean_angles_mean']:.4f}" + _pm(g["auc_mean_angles_sd"]),
             "n/a" if g["seeds"] < 2
             else f"[{g['auc_mean_angles_ci95_low']:.4f}, {g['auc_mean_angles_ci95_high']:.4f}]",
             g["invariance_interpolated_mean_mean"]] for g in result["groups"]]
    print_table(f"histoeq sweep: {out}", ["Model", "Augment", "Fraction", "Seeds", "val AUC", "AUC (mean over angles)",
                                          "95% CI", "|dp| interpolated"], rows)
    claims = [c for c in result["claims"] if c["metric"] == "auc_mean_angles"]
    if claims:
        print_table("claims (test AUC, mean over angles; difference of means over seeds, Welch 95% CI)",
                    ["Claim", "G-CNN", "Fraction", "Versus", "Difference", "95% CI", "Verdict"],
                    [[c["claim"], c["model"], f"{c['fraction']:g}", c["versus"], f"{c['difference']:+.4f}",
                      f"[{c['ci95_low']:+.4f}, {c['ci95_high']:+.4f}]", c["verdict"]] for c in claims])
    console.print(f"{result['trained']} cells trained, {result['skipped']} already done; wrote {result['summary']}")


@bench_app.command("train")
def bench_train_command(
    data: Path = typer.Option(..., "--data", help="Dataset folder."),
    models: str = typer.Option("", "--models", help="Comma-separated model names (default: all)."),
    fraction: float = typer.Option(1.0, "--fraction", help="Fraction of the train split to time."),
    batch_size: int = typer.Option(128, "--batch-size"),
    width: int = typer.Option(None, "--width"),
    orientations: int = typer.Option(None, "--orientations", hidden=True),
    augment: str = typer.Option("none", "--augment"),
    device: str = typer.Option("auto", "--device", help=_DEVICE_HELP),
) -> None:
    """Time one training epoch per model on the train split."""
    from histoeq.cli._render import print_table, rich_progress
    from histoeq.lab.bench_train import bench_train

    refuse_orientations(orientations)
    with rich_progress(transient=True) as progress:
        rows = bench_train(data, _csv(models) or None, fraction=fraction, batch_size=batch_size, width=width,
                           augment=augment, device=device, progress=progress)
    print_table(f"one training epoch ({rows[0]['patches']} patches, batch {batch_size}, {rows[0]['device']}, "
                f"{rows[0]['threads']} threads)", ["Model", "Params", "Seconds/epoch", "Patches/s"],
                [[r["model"], r["parameters"], r["seconds"], r["patches_per_s"]] for r in rows])


_CV_COMPARE_EPILOG = """\
[bold]Examples[/bold]

  # recipe R1 against R0 (the first arm is the reference), each the
  # oof.csv of a histoeq sweep --cv 5 folder
  histoeq cv-compare r0=sweeps/cv-r0/oof.csv r1=sweeps/cv-r1/oof.csv

  # spatial context on the same predictions (KERNEL after @: box3,
  # binomial3, binomial5)
  histoeq cv-compare patch=sweeps/cv-r1/oof.csv \\
      box3=sweeps/cv-r1/oof.csv@box3
"""


@app.command("cv-compare", epilog=_CV_COMPARE_EPILOG)
def cv_compare_command(
    arms: list[str] = typer.Argument(..., help="NAME=OOF.csv[@KERNEL] per arm; the first is the reference."),
    step: float = typer.Option(50.0, "--step", help="Tile grid pitch in pixels for the context kernels."),
    n_boot: int = typer.Option(10_000, "--n-boot", help="Patient-bootstrap replicates."),
    out: Path = typer.Option(None, "--out", help="Also write the comparisons and per-patient AUCs as CSV here."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Endpoints of out-of-fold predictions with patient-bootstrap intervals, and paired per-patient comparisons
    (Holm-adjusted over the arms given): the decision rule of docs/protocol.md."""
    from histoeq.cli._render import print_table
    from histoeq.errors import HistoeqError
    from histoeq.evaluate.oof import compare_arms, parse_arm

    if out is not None:
        refuse_existing([out / "comparisons.csv", out / "per_patient.csv"], overwrite)
    if n_boot < 100:
        raise HistoeqError(f"--n-boot must be at least 100, got {n_boot}")
    if not step > 0:
        raise HistoeqError(f"--step must be positive, got {step}")
    results, comparisons = compare_arms([parse_arm(a) for a in arms], step=step, n_boot=n_boot)
    print_table("out-of-fold endpoints (95 % patient-bootstrap intervals)",
                ["arm", "patients", "mean patient AUC", "pooled AUC", "threshold", "balanced acc.", "F1"],
                [[r.name, r.patients, r.mean_patient_auc.text(), r.pooled_auc.text(), r.threshold,
                  r.balanced_accuracy.text(), r.f1.text()] for r in results])
    if len(comparisons):
        print_table("paired per-patient AUC differences (Holm over these comparisons)",
                    ["comparison", "mean Δ", "95 % interval", "p", "p (Holm)", "better patients", "adopted"],
                    [[c.comparison, f"{c.mean_delta_patient_auc:+.4f}", f"[{c.ci95_low:+.4f}, {c.ci95_high:+.4f}]",
                      f"{c.p:.4f}", f"{c.p_holm:.4f}", c.better_patients, "yes" if c.adopted else "no"]
                     for c in comparisons.itertuples()])
    if out is not None:
        import pandas as pd

        from histoeq.atomic import write_text_atomic

        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "comparisons.csv", comparisons.to_csv(index=False))
        per_patient = pd.concat([r.per_patient.assign(arm=r.name) for r in results])
        write_text_atomic(out / "per_patient.csv", per_patient.to_csv(index=False))
