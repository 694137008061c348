"""Matplotlib figures for evaluation and sweeps (Agg backend, written atomically as PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

from histoeq.atomic import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_png(fig: Any, path: Path) -> None:
    """Render `fig` as PNG to `path` as is (a temporary name that `atomic_paths` renames with the files it belongs
    with) and close it."""
    try:
        fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def save_figure(fig: Any, path: Path) -> Path:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            write_png(fig, tmp)
    finally:
        plt.close(fig)
    return path


def plot_metric_vs_angle(series: Sequence[dict[str, Any]], path: Path, metric: str = "auc",
                         title: str = "") -> Path:
    """One line per series: {"label", "angles", "values", optional "sd", optional "mirrored": bool}.

    Mirrored views are drawn dashed; a second panel shows the mean invariance error when given ("invariance")."""
    return save_figure(metric_vs_angle_figure(series, metric, title), path)


def metric_vs_angle_figure(series: Sequence[dict[str, Any]], metric: str = "auc", title: str = "") -> Any:
    """The figure of `plot_metric_vs_angle`, not yet written."""
    with_inv = any("invariance" in s for s in series)
    fig, axes = plt.subplots(1, 2 if with_inv else 1, figsize=(11 if with_inv else 6, 4), squeeze=False)
    ax = axes[0][0]
    for s in series:
        style = "--" if s.get("mirrored") else "-"
        line, = ax.plot(s["angles"], s["values"], style, marker="o", ms=3, label=s["label"])
        if s.get("sd") is not None:
            lo = [v - d for v, d in zip(s["values"], s["sd"])]
            hi = [v + d for v, d in zip(s["values"], s["sd"])]
            ax.fill_between(s["angles"], lo, hi, alpha=0.2, color=line.get_color())
        if with_inv and "invariance" in s:
            axes[0][1].plot(s["angles"], s["invariance"], style, marker="o", ms=3, color=line.get_color(),
                            label=s["label"])
    ax.set_xlabel("rotation angle (degrees)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs rotation angle")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if with_inv:
        axes[0][1].set_xlabel("rotation angle (degrees)")
        axes[0][1].set_ylabel("mean |p(x) - p(Rx)|")
        axes[0][1].set_title("invariance error")
        axes[0][1].grid(alpha=0.3)
    return fig


def plot_metric_vs_fraction(series: Sequence[dict[str, Any]], path: Path, metric: str = "auc",
                            title: str = "") -> Path:
    """One line per series {"label", "fractions", "mean", "sd"} with mean +- sd error bars; log-scaled x axis."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in series:
        ax.errorbar(s["fractions"], s["mean"], yerr=s["sd"], marker="o", ms=4, capsize=3, label=s["label"])
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training data")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs training data fraction (mean ± sd over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
