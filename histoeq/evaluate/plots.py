"""Matplotlib figures for evaluation and sweeps (Agg backend, written atomically as PNG)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

from histoeq.atomic import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator  # noqa: E402


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
    """One line per series: {"label", "angles", "values", optional "sd", optional "seeds", optional "mirrored"}.

    Mirrored views are drawn dashed; a second panel shows the mean invariance error when given ("invariance")."""
    return save_figure(metric_vs_angle_figure(series, metric, title), path)


def metric_range(values: Sequence[float], floor: float = 0.5, ceiling: float = 1.0, min_width: float = 0.1
                 ) -> tuple[float, float]:
    """A fixed y-range for a score in [0, 1] (AUC, accuracy): [`floor`, `ceiling`] unless the data (with its error
    bars) go below `floor`, then down to the next 0.1 below them; never narrower than `min_width`.

    Matplotlib's autoscaling makes a 0.002 AUC difference fill the axis, which reads as a large effect."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low = min([floor, *finite])
    low = max(0.0, math.floor(low * 10 + 1e-9) / 10) if low < floor else floor
    high = max([ceiling, *finite])
    return (low, max(high, low + min_width))


def error_range(values: Sequence[float], min_top: float = 0.05) -> tuple[float, float]:
    """A y-range from 0 for an error or distance (the invariance error): up to the next 0.05 above the data."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    top = max([0.0, *finite]) * 1.05  # a little headroom above the largest value
    return (0.0, max(min_top, math.ceil(top * 20 - 1e-9) / 20))


def _seeds_note(s: dict[str, Any]) -> str:
    n = s.get("seeds")
    return "" if n is None else f" (n={n} seed{'s' if n != 1 else ''})"


def metric_vs_angle_figure(series: Sequence[dict[str, Any]], metric: str = "auc", title: str = "") -> Any:
    """The figure of `plot_metric_vs_angle`, not yet written: error bars (sd over seeds) where a series has
    them; the y-axis fixed by `metric_range`, so the spread over angles is drawn to scale."""
    with_inv = any("invariance" in s for s in series)
    fig, axes = plt.subplots(1, 2 if with_inv else 1, figsize=(11 if with_inv else 6, 4), squeeze=False)
    ax = axes[0][0]
    shown: list[float] = []
    inv_shown: list[float] = []
    for s in series:
        style = "--" if s.get("mirrored") else "-"
        sd = s.get("sd") if (s.get("seeds") or 2) >= 2 else None
        label = s["label"] + _seeds_note(s)
        if sd is not None:
            line = ax.errorbar(s["angles"], s["values"], yerr=sd, fmt=style, marker="o", ms=3, capsize=3,
                               label=label).lines[0]
            shown += [v - d for v, d in zip(s["values"], sd)] + [v + d for v, d in zip(s["values"], sd)]
        else:
            line, = ax.plot(s["angles"], s["values"], style, marker="o", ms=3, label=label)
            shown += list(s["values"])
        if with_inv and "invariance" in s:
            axes[0][1].plot(s["angles"], s["invariance"], style, marker="o", ms=3, color=line.get_color(),
                            label=s["label"])
            inv_shown += list(s["invariance"])
    ax.set_ylim(*metric_range(shown))
    angles = sorted({float(a) for s in series for a in s["angles"]})
    if 0 < len(angles) <= 16:
        for panel in axes[0]:
            panel.set_xticks(angles, [f"{a:g}" for a in angles])
    ax.set_xlabel("rotation angle (degrees)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs rotation angle")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if with_inv:
        axes[0][1].set_ylim(*error_range(inv_shown))
        axes[0][1].set_xlabel("rotation angle (degrees)")
        axes[0][1].set_ylabel("mean |p(x) - p(Rx)|")
        axes[0][1].set_title("invariance error")
        axes[0][1].grid(alpha=0.3)
    return fig


def plot_metric_vs_fraction(series: Sequence[dict[str, Any]], path: Path, metric: str = "auc",
                            title: str = "") -> Path:
    """Write `metric_vs_fraction_figure`."""
    return save_figure(metric_vs_fraction_figure(series, metric, title), path)


def metric_vs_fraction_figure(series: Sequence[dict[str, Any]], metric: str = "auc", title: str = "") -> Any:
    """One line per series {"label", "fractions", "mean", "sd", optional "seeds" (count per fraction)} on a log x
    axis with every fraction labelled. Points from several seeds are filled with mean ± sd error bars; points from
    one seed are hollow and have none (an sd of one value is not zero, it is unknown)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    fractions: set[float] = set()
    shown: list[float] = []
    for s in series:
        seeds = list(s.get("seeds") or [None] * len(s["fractions"]))
        counts = sorted({int(n) for n in seeds if n is not None})
        note = "" if not counts else _seeds_note({"seeds": counts[0]}) if len(counts) == 1 \
            else f" (n={counts[0]}–{counts[-1]} seeds)"
        line, = ax.plot(s["fractions"], s["mean"], "-", label=s["label"] + note)
        colour = line.get_color()
        for f, m, sd, n in zip(s["fractions"], s["mean"], s["sd"], seeds):
            fractions.add(float(f))
            one = n is not None and n < 2
            yerr = None if one or sd is None or not math.isfinite(sd) else sd
            ax.errorbar([f], [m], yerr=None if yerr is None else [yerr], marker="o", ms=5, capsize=3,
                        color=colour, mfc="white" if one else colour, mec=colour)
            shown += [m] if yerr is None else [m - yerr, m + yerr]
    ax.set_xscale("log")
    ticks = sorted(fractions)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{t:g}" for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    if ticks:
        ax.set_xlim(ticks[0] / 1.3, ticks[-1] * 1.3)
    ax.set_ylim(*metric_range(shown))
    ax.set_xlabel("fraction of training data")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs training data fraction")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if any(n is not None and n < 2 for s in series for n in (s.get("seeds") or [])):
        handles += [Line2D([], [], ls="", marker="o", color="grey", mfc="grey"),
                    Line2D([], [], ls="", marker="o", color="grey", mfc="white")]
        labels += ["mean ± sd over seeds", "one seed (no error bar)"]
    ax.legend(handles, labels, fontsize=7)
    return fig
