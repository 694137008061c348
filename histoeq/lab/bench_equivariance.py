"""The 45° protocol over several random initialisations, per model and filter-resampling method."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from histoeq.lab.bench_layers import MIN_TILE_PX
from histoeq.lab.checks import check_finite, check_int
from histoeq.models import create
from histoeq.models.equivariance import rotation_error
from histoeq.nn.kernels import METHODS
from histoeq.progress import ProgressFn, null_progress


@dataclass
class AngleErrorRow:
    model: str
    method: str
    interpolation: str
    mean: float
    sd: float
    median: float


def bench_angle_error(angle_deg: float = 45.0, tile_px: int = 50, seeds: int = 8, orientations: int = 8,
                      interpolations: tuple[str, ...] = ("bilinear", "spline"),
                      progress: ProgressFn = null_progress) -> list[AngleErrorRow]:
    """Relative logit error under rotation of the input, mean/sd/median over ``seeds`` random initialisations,
    for the issue's bilinear input rotation and for an amplitude-preserving spline rotation."""
    angle_deg = check_finite("--angle", angle_deg)
    check_int("--tile-px", tile_px, MIN_TILE_PX)
    check_int("--seeds", seeds)
    check_int("--orientations", orientations)
    configs = [("cnn", "pixel", {})] + [
        (f"se2 (N={orientations})", m, {"orientations": orientations, "kernel_method": m})
        for m in METHODS if m != "pixel"
    ]
    rows = []
    jobs = [(c, interp) for interp in interpolations for c in configs]
    for i, ((label, method, kw), interp) in enumerate(jobs):
        errs = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = create("cnn") if label == "cnn" else create("se2", **kw)
            errs.append(rotation_error(model, angle_deg, tile_px, seed=seed, interpolation=interp))
        rows.append(AngleErrorRow(label, method, interp, statistics.mean(errs),
                                  statistics.stdev(errs) if seeds > 1 else 0.0, statistics.median(errs)))
        progress("rotation protocol", i + 1, len(jobs))
    return rows
