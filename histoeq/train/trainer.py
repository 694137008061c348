"""The training loop behind `histoeq train`: one run folder per (model, data fraction, augmentation, seed).

Choices, and why:

* AdamW + cosine learning-rate decay stepped per batch (no warm restarts): robust defaults for small CNNs and G-CNNs
  alike, so model comparisons do not hinge on per-model tuning.
* Class imbalance (IDC is 23 % positive) is handled with a class-weighted cross-entropy, weights n / (K * n_c)
  computed on the chosen training ids. A weighted loss keeps every patch in every epoch (a balanced sampler would
  drop or repeat patches, which muddies the data-fraction comparison).
* Validation every epoch on the whole val split; the best checkpoint is chosen by validation AUC; training stops
  early after `patience` epochs without improvement. With ``select="last"`` (cross-validation, where the val split
  is the held-out fold) nothing is chosen on validation: the weights at the end of the fixed epoch budget are the
  run's model, and their validation predictions (``val_predictions.csv``) are out-of-fold predictions.
* Optional recipe parts, each off by default so older runs resume unchanged: a linear warm-up before the cosine
  (``warmup_epochs``), an exponential moving average of the weights (``ema``: decay per step, BatchNorm buffers
  averaged too; the average is what is validated, saved as ``state_dict`` and exported, the raw weights are kept
  for resuming) and label smoothing.
* AMP (bf16, or fp16 with a grad scaler) on CUDA only; on CPU everything is float32 and deterministic for a seed.
* Every random draw is seeded from (seed, epoch): model init from `seed`, batch order from `DistributedSampler`
  (seed, epoch), augmentation per sample from (seed, epoch). `last.pt` is written at the end of every epoch with the
  optimizer, scheduler, grad-scaler, sampler and RNG states, so `--resume` after an interruption continues from the
  last finished epoch and ends with the same weights as an unbroken run.
* Under torchrun the global batch is `--batch-size` split evenly over the processes; the loss is normalised by the
  global batch size so DDP's gradient averaging gives the single-process gradient. Each process validates on the
  whole val split (cheap, and every rank then takes the same early-stopping decision without communication);
  rank 0 alone writes files.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DistributedSampler

from histoeq import __version__
from histoeq.atomic import check_output_dir
from histoeq.data.dataset import PatchDataset
from histoeq.data.folds import cv_splits, parse_fold
from histoeq.data.fractions import fraction_hash, save_fraction, select_fraction
from histoeq.data.stain import dataset_stain
from histoeq.errors import HistoeqError, InputError
from histoeq.evaluate.metrics import classification_metrics
from histoeq.progress import ProgressFn, emit, null_progress
from histoeq.runs import runinfo
from histoeq.runs.checkpoint import (
    BEST_NAME,
    KERNEL_BASIS,
    LAST_NAME,
    is_legacy_basis,
    load_checkpoint,
    load_state,
    save_checkpoint,
)
from histoeq.train.batches import PatchBatches, epoch_generator, parse_augment
from histoeq.train.config import RESUME_KEYS, TrainConfig, changed_options
from histoeq.train.distributed import DistInfo, barrier, init_distributed, shutdown
from histoeq.train.models import create_model, model_config, unwrap

VAL_PREDICTIONS = "val_predictions.csv"
# Validation batch per device type: on CPU small batches stay in cache (p4m width 8, one thread, 1024 patches:
# 1.9 s at 128 vs 5.8 s at 1024); accelerators want large ones.
EVAL_BATCH = {"cpu": 128}
EVAL_BATCH_ACCELERATOR = 1024


def train(config: TrainConfig, progress: ProgressFn = null_progress) -> dict[str, Any]:
    """Train one model into `config.out`; returns a summary (best epoch, best val AUC, status, timings)."""
    config.check()
    check_output_dir(config.out)  # before the dataset is read: a read-only or full disk fails now, as one line
    dataset = PatchDataset.open(config.data)
    if config.cv_fold is not None:
        dataset = dataset.with_splits(cv_splits(dataset.index, *parse_fold(config.cv_fold)))
    if config.pooled:
        dataset = dataset.with_splits(dataset.index["split"].replace({"val": "train"}))
    train_ids = dataset.split_ids("train")  # InputError when the dataset has no train split
    if not config.pooled:
        dataset.split_ids("val")
    chosen = select_fraction(dataset.index, config.fraction, config.seed, split="train")
    present = np.unique(dataset.labels[chosen])
    if len(present) < 2:  # nothing to discriminate: the loss is trivially zero and AUC is undefined
        only = ", ".join(dataset.classes[int(k)] for k in present)
        raise InputError(config.data, f"the training patches hold one class only ({only}); need at least two")
    assert np.isin(chosen, train_ids).all()
    info, device = init_distributed(config.device)
    try:
        return _Run(config, dataset, chosen, info, device, progress if info.is_main else null_progress).run()
    finally:
        shutdown(info)


class _Run:
    def __init__(self, config: TrainConfig, dataset: Any, chosen: np.ndarray, info: DistInfo,
                 device: torch.device, progress: ProgressFn) -> None:
        self.config, self.dataset, self.info, self.device, self.progress = config, dataset, info, device, progress
        self.out = Path(config.out)
        self.chosen = chosen
        self.fraction_hash = fraction_hash(chosen)
        if config.batch_size % info.world_size:
            raise HistoeqError(f"--batch-size {config.batch_size} must be divisible by the number of processes "
                               f"({info.world_size})")
        self.local_batch = config.batch_size // info.world_size
        last = self.out / LAST_NAME
        if self.out.exists() and not self.out.is_dir():
            raise InputError(self.out, "--out exists and is not a folder")
        if last.exists() and not config.resume:
            raise InputError(self.out, "already holds a run (pass --resume to continue it, or choose another --out)")
        self.plan = parse_augment(config.augment)
        labels = dataset.labels
        num_classes = len(dataset.classes)
        torch.manual_seed(config.seed)
        self.model = create_model(config.model, num_classes=num_classes,
                                  width=config.width, match=config.match, **config.model_kwargs).to(device)
        self.train_data = PatchBatches(dataset.images[chosen], labels[chosen], dataset.normalisation, device,
                                       self.plan, config.seed, config.num_workers)
        self.val_data = None
        if not config.pooled:
            val_ids = dataset.split_ids("val")
            self.val_data = PatchBatches(dataset.images[val_ids], labels[val_ids], dataset.normalisation, device)
        counts = np.bincount(labels[chosen], minlength=num_classes).astype(np.float64)
        weights = counts.sum() / (num_classes * np.maximum(counts, 1.0))
        self.class_weights = torch.tensor(weights, dtype=torch.float32, device=device)
        self.sampler = DistributedSampler(range(len(chosen)), num_replicas=info.world_size, rank=info.rank,
                                          shuffle=True, seed=config.seed, drop_last=False)
        per_rank = len(self.sampler)
        self.steps_per_epoch = math.ceil(per_rank / self.local_batch)
        if config.max_steps is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = _schedule(self.optimizer, config.epochs * self.steps_per_epoch,
                                   round((config.warmup_epochs or 0) * self.steps_per_epoch))
        self.ema = None
        if config.ema is not None:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
        self.amp_dtype = None
        if device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.net: nn.Module = self.model
        if info.enabled:
            # BatchNorm statistics stay per process (GroupBatchNorm2d cannot become SyncBatchNorm).
            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda"
                                               else None)
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.best_auc, self.best_epoch, self.bad_epochs = 0, -math.inf, None, 0
        self.resumed_from: int | None = None
        self.seconds_before = 0.0
        if config.resume and last.exists():
            self._restore(last)
        self.static = {
            "model_config": model_config(self.model),
            "classes": dataset.classes,
            "tile_px": dataset.tile_px,
            "mpp": dataset.mpp,
            "normalisation": {"mean": list(dataset.normalisation["mean"]), "std": list(dataset.normalisation["std"])},
            "data_hash": runinfo.dataset_hash(dataset.path),
            "fraction_hash": self.fraction_hash,
            "stain": dataset_stain(dataset.meta),
            "histoeq_version": __version__,
            "kernel_basis": KERNEL_BASIS,
        }

    # ---- bookkeeping -------------------------------------------------------------------------------------------
    def _restore(self, last: Path) -> None:
        payload = load_checkpoint(last)
        # The dataset is the same when its content hash is, however its path is spelled (relative, via a link).
        same_data = payload.get("data_hash") == runinfo.dataset_hash(self.config.data)
        keys = tuple(k for k in RESUME_KEYS if not (k == "data" and same_data))
        detail = changed_options(payload.get("options", {}), self.config.options(), keys)
        if detail:
            raise InputError(last, f"cannot resume with different options ({detail})")
        if payload.get("fraction_hash") != self.fraction_hash:
            raise InputError(last, "cannot resume: the chosen training ids differ (dataset changed?)")
        if is_legacy_basis(payload) and any(getattr(m, "method", None) == "steerable" for m in self.model.modules()):
            # Adam's second moments do not follow a change of basis: such a run cannot continue exactly.
            raise InputError(last, "cannot resume: saved with the legacy steerable basis (before kernel_basis); "
                                   "start a new run")
        if self.ema is not None:
            load_state(self.model, payload["train_state_dict"], last)
            self.ema.module.load_state_dict(payload["state_dict"])
            self.ema.n_averaged.fill_(int(payload["ema_n_averaged"]))
        else:
            load_state(self.model, payload["state_dict"], last)
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
            self.scaler.load_state_dict(payload["scaler"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise InputError(last, f"checkpoint has no usable optimizer state for --resume ({exc})") from None
        torch.set_rng_state(payload["rng"]["torch"])
        self.start_epoch = int(payload["sampler"]["epoch"])
        self.history = list(payload.get("history", []))
        self.best_auc = float(payload["best"]["auc"])
        self.best_epoch = payload["best"]["epoch"]
        self.bad_epochs = int(payload["best"]["bad_epochs"])
        self.seconds_before = float(payload.get("seconds", 0.0))
        self.resumed_from = self.start_epoch

    def _write_run_json(self, status: str, extra: dict[str, Any] | None = None) -> None:
        if not self.info.is_main:
            return
        record = {
            "status": status,
            "options": self.config.options(),
            "dataset": {"path": str(self.dataset.path), "hash": self.static["data_hash"],
                        "classes": self.dataset.classes, "tile_px": self.dataset.tile_px, "mpp": self.dataset.mpp,
                        "stain": self.static["stain"]},
            "fraction": {"fraction": self.config.fraction, "n_train": int(len(self.chosen)),
                         "sha256": self.fraction_hash, "ids_file": runinfo.FRACTION_IDS},
            "n_val": 0 if self.val_data is None else len(self.val_data),
            "val_patients": sorted(self.dataset.index.loc[self.dataset.index["split"] == "val", "patient"]
                                   .astype(str).unique().tolist()),
            "model_config": self.static["model_config"],
            "parameters": int(sum(p.numel() for p in self.model.parameters())),
            "class_imbalance": {"method": "class-weighted cross-entropy, w_c = n / (K n_c)",
                                "weights": [round(float(w), 6) for w in self.class_weights.cpu()]},
            "optimizer": {"name": "AdamW", "lr": self.config.lr, "weight_decay": self.config.weight_decay,
                          "schedule": "cosine per step" + (f" after {self.config.warmup_epochs:g} warm-up epochs"
                                                           if self.config.warmup_epochs else ""),
                          "steps_per_epoch": self.steps_per_epoch,
                          "ema": self.config.ema, "label_smoothing": self.config.label_smoothing},
            "selection": self.config.select or "best",
            "device": str(self.device), "amp": None if self.amp_dtype is None else str(self.amp_dtype),
            "world_size": self.info.world_size,
            "resumed_from_epoch": self.resumed_from,
            "versions": runinfo.library_versions(),
            "git": runinfo.git_commit(),
            **(extra or {}),
        }
        runinfo.write_json(self.out / runinfo.RUN_JSON, record)

    def _eval_model(self) -> nn.Module:
        """The weights that are validated, saved as ``state_dict`` and exported: the average when there is one."""
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def _save(self, epoch: int, val: dict[str, float], improved: bool, seconds: float,
              val_probs: np.ndarray | None = None) -> None:
        if not self.info.is_main:
            return
        state = {k: v.detach().cpu() for k, v in self._eval_model().state_dict().items()}
        common = {**self.static, "state_dict": state, "epoch": epoch, "metrics": {"val": val}}
        extra: dict[str, Any] = {}
        if self.ema is not None:
            extra = {"train_state_dict": {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()},
                     "ema_n_averaged": int(self.ema.n_averaged.item())}
        if improved:
            save_checkpoint(self.out / BEST_NAME, common)
            if val_probs is not None:
                self._write_val_predictions(val_probs)
        save_checkpoint(self.out / LAST_NAME, {
            **common, **extra,
            "options": self.config.options(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": {"epoch": epoch + 1, "seed": self.config.seed, "world_size": self.info.world_size},
            "rng": {"torch": torch.get_rng_state()},
            "history": self.history,
            "best": {"auc": self.best_auc, "epoch": self.best_epoch, "bad_epochs": self.bad_epochs},
            "seconds": seconds,
        })
        runinfo.write_jsonl(self.out / runinfo.METRICS_JSONL, self.history)

    # ---- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.config
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_fraction(self.out / runinfo.FRACTION_IDS, self.chosen, fraction=cfg.fraction, seed=cfg.seed,
                          split="train", dataset=str(self.dataset.path))
        status = "finished"
        if self.start_epoch >= cfg.epochs or (self.history and self.history[-1].get("stopped_early")):
            return self._finish("finished" if not self.history or not self.history[-1].get("stopped_early")
                                else "stopped-early")
        self._write_run_json("running")
        total_steps = cfg.epochs * self.steps_per_epoch
        seconds = self.seconds_before
        loop_start = time.perf_counter()
        for epoch in range(self.start_epoch, cfg.epochs):
            torch.manual_seed(int(epoch_generator(cfg.seed, epoch, 3).initial_seed() % (2**63)))
            t0 = time.perf_counter()
            train_loss = self._train_epoch(epoch, total_steps)
            t1 = time.perf_counter()
            val, val_probs = self._validate()
            t2 = time.perf_counter()
            seconds += t2 - t0
            improved = (math.isfinite(val["auc"]) and val["auc"] > self.best_auc or self.best_epoch is None
                        or cfg.select == "last")
            if improved:
                self.best_auc = val["auc"] if math.isfinite(val["auc"]) else -math.inf
                self.best_epoch, self.bad_epochs = epoch, 0
            else:
                self.bad_epochs += 1
            stop = self.bad_epochs >= cfg.patience and epoch + 1 < cfg.epochs and cfg.select != "last"
            self.history.append({
                "epoch": epoch, "train_loss": train_loss, "lr": self.scheduler.get_last_lr()[0],
                **{f"val_{k}": v for k, v in val.items()}, "train_seconds": round(t1 - t0, 4),
                "val_seconds": round(t2 - t1, 4), "best": bool(improved), "stopped_early": bool(stop),
            })
            self._save(epoch, val, improved, seconds, val_probs)
            self.progress("train", (epoch + 1) * self.steps_per_epoch, total_steps,
                          f"epoch {epoch + 1}/{cfg.epochs} loss {train_loss:.4f}"
                          + ("" if self.val_data is None else f" val AUC {val['auc']:.4f}"))
            # The ETA assumes the full epoch budget; early stopping can only make it shorter.
            emit(self.progress, "epoch", epoch=epoch + 1, epochs=cfg.epochs, train_loss=train_loss,
                 val_auc=val["auc"], val_balanced_accuracy=val.get("balanced_accuracy"), best=bool(improved),
                 duration_s=round(t2 - t0, 3),
                 eta_s=round((t2 - loop_start) / (epoch + 1 - self.start_epoch) * (cfg.epochs - epoch - 1), 3))
            if stop:
                status = "stopped-early"
                break
        barrier(self.info)
        return self._finish(status)

    def _finish(self, status: str) -> dict[str, Any]:
        best = next((h for h in self.history if h["epoch"] == self.best_epoch), {})
        summary = {
            "out": str(self.out), "status": status, "epochs_run": len(self.history), "best_epoch": self.best_epoch,
            "best_val": {k[4:]: v for k, v in best.items() if k.startswith("val_") and k != "val_seconds"},
            "train_seconds_per_epoch": (float(np.mean([h["train_seconds"] for h in self.history]))
                                        if self.history else None),
            "n_train": int(len(self.chosen)), "device": str(self.device), "world_size": self.info.world_size,
        }
        self._write_run_json(status, {"result": summary})
        return summary

    def _train_epoch(self, epoch: int, total_steps: int) -> float:
        self.net.train()
        self.sampler.set_epoch(epoch)
        self.train_data.start_epoch(epoch)
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        # Per-step losses stay on the device; reading them (a GPU sync) happens only when progress is reported.
        losses: list[torch.Tensor] = []
        for step in range(self.steps_per_epoch):
            positions = order[step * self.local_batch:(step + 1) * self.local_batch]
            x, y = self.train_data.batch(positions)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                logits = self.net(x)
            per_sample = F.cross_entropy(logits.float(), y, weight=self.class_weights, reduction="none",
                                         label_smoothing=self.config.label_smoothing or 0.0)
            # sum / local size: DDP's average over equal-sized shards then equals the global-batch mean.
            loss = per_sample.sum() / len(positions)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(unwrap(self.model))
            losses.append(per_sample.detach().mean())
            done = epoch * self.steps_per_epoch + step + 1
            if step % 10 == 0 or step + 1 == self.steps_per_epoch:
                recent = torch.stack(losses[-20:]).mean().item()
                self.progress("train", done, total_steps,
                              f"epoch {epoch + 1}/{self.config.epochs} loss {recent:.4f}"
                              + (f" best val AUC {self.best_auc:.4f}" if math.isfinite(self.best_auc) else ""))
        return float(torch.stack(losses).mean().item()) if losses else float("nan")

    def _write_val_predictions(self, probs: np.ndarray) -> None:
        """The selected model's probabilities on the val split: out-of-fold predictions under ``--cv-fold``."""
        rows = self.dataset.index.set_index("id").loc[self.dataset.split_ids("val")].reset_index()
        table = pd.DataFrame({"id": rows["id"], "patient": rows["patient"].astype(str), "x": rows["x"],
                              "y": rows["y"], "label": rows["label"]})
        for k, name in enumerate(self.dataset.classes):
            table[f"p_{name}"] = probs[:, k]
        runinfo.write_text_atomic(self.out / VAL_PREDICTIONS, table.to_csv(index=False, float_format="%.7g"))

    @torch.no_grad()
    def _validate(self) -> tuple[dict[str, float], np.ndarray | None]:
        if self.val_data is None:
            return {"auc": math.nan}, None
        model = self._eval_model()
        model.eval()
        probs, losses = [], []
        step = EVAL_BATCH.get(self.device.type, EVAL_BATCH_ACCELERATOR)
        for start in range(0, len(self.val_data), step):
            positions = torch.arange(start, min(start + step, len(self.val_data)))
            x, y = self.val_data.batch(positions, augment=False)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                logits = model(x).float()
            losses.append(F.cross_entropy(logits, y, weight=self.class_weights, reduction="sum").item())
            probs.append(torch.softmax(logits, dim=1).cpu().numpy())
        labels = self.val_data.labels.cpu().numpy()
        probs = np.concatenate(probs)
        if not np.isfinite(probs).all():
            raise HistoeqError(f"{self.out}: training diverged (non-finite validation probabilities); lower --lr "
                               "and start a new run folder")
        metrics = classification_metrics(labels, probs)
        metrics["loss"] = float(np.sum(losses) / max(1, len(labels)))
        return metrics, probs


def _schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> Any:
    """Cosine decay over `total_steps`, after a linear warm-up over `warmup_steps` when there is one.

    Without warm-up this is exactly `CosineAnnealingLR` (so runs recorded before warm-up existed resume
    unchanged)."""
    if warmup_steps <= 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
