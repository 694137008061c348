"""The options of one training run (`histoeq train`), their checks, and which of them a resume must keep.

Kept apart from the loop so the loop module holds only the loop; the sweep and the CLI build and compare these.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from histoeq.data.folds import parse_fold
from histoeq.errors import HistoeqError
from histoeq.train.batches import parse_augment

# Options that must not change when a run is resumed (device, workers and patience may).
RESUME_KEYS = ("data", "model", "width", "match", "fraction", "augment", "epochs", "batch_size",
               "lr", "weight_decay", "seed", "max_steps", "cv_fold", "warmup_epochs", "ema", "label_smoothing",
               "select", "train_on")
SELECT_CHOICES = ("best", "last")
TRAIN_ON_CHOICES = ("train", "train+val")


def changed_options(saved: dict, now: dict, keys: tuple[str, ...] = RESUME_KEYS) -> str:
    """'key: old -> new' for each of ``keys`` that differs between a run's saved options and ``now``; '' if none."""
    # A key absent from an older run.json counts as its default (None) when this run sets it.
    changed = [k for k in keys if (k in saved or now.get(k) is not None) and saved.get(k) != now.get(k)]
    return ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)


@dataclass
class TrainConfig:
    """Every option of `histoeq train` (recorded verbatim in run.json)."""

    data: Path
    model: str
    out: Path
    width: int | None = None
    match: str | None = None
    fraction: float = 1.0
    augment: str = "none"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    num_workers: int = 0
    patience: int = 5
    max_steps: int | None = None  # cap on optimizer steps per epoch (smoke tests, benchmarks)
    cv_fold: str | None = None  # "i/k": validate on fold i of k patient folds of train+val (histoeq.data.folds)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra create() arguments, e.g. dropout
    # Recipe options; None means off (and keeps resuming runs recorded before they existed).
    warmup_epochs: float | None = None  # linear warm-up over this many epochs, then cosine
    ema: float | None = None  # decay of the exponential moving average of the weights, per optimizer step
    label_smoothing: float | None = None
    select: str | None = None  # "best" (default: best val AUC, early stopping) or "last" (fixed budget)
    # "train+val": the final model of a cross-validation protocol, trained on the whole pool with no validation.
    train_on: str | None = None

    def options(self) -> dict[str, Any]:
        opts = asdict(self)
        opts["data"], opts["out"] = str(self.data), str(self.out)
        return opts

    def check(self) -> None:
        if self.epochs < 1:
            raise HistoeqError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise HistoeqError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise HistoeqError(f"--lr must be a positive number, got {self.lr}")
        if not (0.0 < self.fraction <= 1.0):
            raise HistoeqError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.patience < 1:
            raise HistoeqError(f"--patience must be at least 1, got {self.patience}")
        if not 0 <= self.seed < 2**63:
            raise HistoeqError(f"--seed must be between 0 and 2**63 - 1, got {self.seed}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise HistoeqError(f"--weight-decay must be a number >= 0, got {self.weight_decay}")
        if self.num_workers < 0:
            raise HistoeqError(f"--workers must be at least 0, got {self.num_workers}")
        if self.width is not None and self.width < 1:
            raise HistoeqError(f"--width must be at least 1, got {self.width}")
        if self.max_steps is not None and self.max_steps < 1:
            raise HistoeqError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.cv_fold is not None:
            parse_fold(self.cv_fold)
        parse_augment(self.augment)
        if self.warmup_epochs is not None and not (0 <= self.warmup_epochs <= self.epochs):
            raise HistoeqError(f"--warmup-epochs must be between 0 and --epochs ({self.epochs}), got "
                               f"{self.warmup_epochs}")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise HistoeqError(f"--ema must be a decay in (0, 1), e.g. 0.999, got {self.ema}")
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise HistoeqError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.select is not None and self.select not in SELECT_CHOICES:
            raise HistoeqError(f"--select must be one of {', '.join(SELECT_CHOICES)}, got {self.select!r}")
        if self.train_on is not None and self.train_on not in TRAIN_ON_CHOICES:
            raise HistoeqError(f"--train-on must be one of {', '.join(TRAIN_ON_CHOICES)}, got {self.train_on!r}")
        if self.pooled and (self.select != "last" or self.cv_fold is not None):
            # Nothing is held out, so nothing can choose an epoch or be scored out of fold.
            raise HistoeqError("--train-on train+val needs --select last and no --cv-fold")

    @property
    def pooled(self) -> bool:
        """Trained on train and val together, with no validation split."""
        return self.train_on == "train+val"
