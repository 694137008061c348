"""Evaluation and sweep figures: axes that do not exaggerate, every fraction labelled, seeds shown, and the ROC,
PR and calibration figures eval writes."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from histoeq.evaluate.curves import calibration_figure, pr_figure, roc_figure, scored_run
from histoeq.evaluate.plots import error_range, metric_range, metric_vs_angle_figure, metric_vs_fraction_figure
from histoeq.evaluate.report import angle_series, replicate_key


def _angle_series(values, sd=None, seeds=None):
    s = {"label": "se2", "angles": [0, 45, 90, 135], "values": values, "invariance": [0.0, 0.01, 0.0, 0.01]}
    if sd is not None:
        s.update(sd=sd, seeds=seeds)
    return s


def test_small_auc_differences_are_not_blown_up() -> None:
    fig = metric_vs_angle_figure([_angle_series([0.901, 0.902, 0.903, 0.901])])
    ax, inv = fig.axes
    assert ax.get_ylim() == (0.5, 1.0)  # autoscaling gave about 0.9009-0.9031
    assert inv.get_ylim() == (0.0, 0.05)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "45", "90", "135"]
    plt.close(fig)


def test_data_below_the_floor_widen_the_range() -> None:
    assert metric_range([0.43, 0.7]) == (0.4, 1.0)
    assert metric_range([0.51, 0.52]) == (0.5, 1.0)
    assert metric_range([0.95, 0.99], floor=0.95) == (0.95, 1.05)  # at least 0.1 wide
    assert metric_range([0.9, float("nan")]) == (0.5, 1.0)
    assert error_range([0.12]) == (0.0, 0.15)


def test_error_bars_over_seeds() -> None:
    fig = metric_vs_angle_figure([_angle_series([0.9, 0.88, 0.9, 0.88], sd=[0.02] * 4, seeds=5)])
    ax = fig.axes[0]
    assert ax.containers and len(ax.containers[0].lines[2][0].get_segments()) == 4  # one bar per angle
    assert "n=5 seeds" in ax.get_legend().get_texts()[0].get_text()
    one = metric_vs_angle_figure([_angle_series([0.9] * 4, sd=[float("nan")] * 4, seeds=1)])
    assert not one.axes[0].containers  # one seed: no error bar
    plt.close("all")


def test_sweep_plot_labels_every_fraction_and_marks_single_seeds() -> None:
    fractions = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    fig = metric_vs_fraction_figure([
        {"label": "cnn", "fractions": fractions, "mean": [0.8, 0.82, 0.85, 0.86, 0.87, 0.88], "sd": [0.01] * 6,
         "seeds": [5] * 6},
        {"label": "se2", "fractions": fractions, "mean": [0.84, 0.85, 0.87, 0.88, 0.89, 0.9],
         "sd": [float("nan")] * 6, "seeds": [1] * 6},
    ])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0.01", "0.05", "0.1", "0.25", "0.5", "1"]
    assert not ax.xaxis.get_minorticklocs().size
    assert ax.get_ylim() == (0.5, 1.0)
    faces = {}
    for container in ax.containers:
        marker = container.lines[0]
        faces.setdefault(marker.get_markerfacecolor() == "white", []).append(container.has_yerr)
    assert faces[True] == [False] * 6 and faces[False] == [True] * 6  # hollow one-seed points have no bar
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["cnn (n=5 seeds)", "se2 (n=1 seed)"] and "one seed (no error bar)" in legend
    plt.close(fig)


def test_curves_figures() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    probs = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, 400), 0, 1)
    runs = [scored_run("good", labels, np.stack([1 - probs, probs], axis=1)), scored_run("flat", labels, probs * 0)]
    roc = roc_figure(runs, "IDC")
    texts = [t.get_text() for t in roc.axes[0].get_legend().get_texts()]
    assert texts[1].startswith("good: AUC 0.9") and texts[2] == "flat: AUC 0.500"
    assert roc.axes[0].get_xlim() == (0.0, 1.0) and roc.axes[0].get_ylim() == (0.0, 1.0)
    pr = pr_figure(runs, "IDC")
    assert any(t.get_text() == "prevalence 0.500" for t in pr.axes[0].get_legend().get_texts())
    cal = calibration_figure(runs[:1], "IDC")
    ax = cal.axes[0]
    xs, ys = ax.lines[1].get_data()
    assert len(xs) <= 10 and ((0 <= ys) & (ys <= 1)).all() and ax.get_ylim() == (0.0, 1.0)
    one_class = roc_figure([scored_run("x", np.zeros(5, int), np.linspace(0, 1, 5))], "IDC")
    assert "undefined" in one_class.axes[0].texts[0].get_text()
    multi = scored_run("m", np.array([0, 1, 2]), np.eye(3))
    assert multi.truth.tolist() == [0, 0, 1] and multi.score.tolist() == [0, 0, 1]
    plt.close("all")


def _run(tmp_path, name: str, seed: int, lr: float = 1e-3) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"options": {"model": "se2", "lr": lr, "seed": seed,
                                                             "out": str(folder)}}))
    return str(folder)


def test_eval_groups_seeds_of_one_recipe(tmp_path) -> None:
    runs = [_run(tmp_path, "a", 0), _run(tmp_path, "b", 1), _run(tmp_path, "c", 0, lr=1e-2)]
    keys = [replicate_key(r) for r in runs] + [replicate_key(tmp_path / "model.onnx")]
    assert keys[0] == keys[1] != keys[2] and keys[3] is None

    def result(auc: float) -> dict:
        return {"model_config": {"name": "se2-w8"},
                "views": [{"angle": a, "mirrored": False, "auc": auc + a / 1000, "invariance_mean": 0.0}
                          for a in (0, 90)]}

    series = angle_series([("a", result(0.8)), ("b", result(0.9)), ("c", result(0.7))], "auc", keys[:3])
    assert [s["label"] for s in series] == ["se2-w8", "c"]
    assert series[0]["values"] == pytest.approx([0.85, 0.94]) and series[0]["seeds"] == 2
    assert series[0]["sd"] == pytest.approx([np.std([0.8, 0.9], ddof=1)] * 2)
    assert "sd" not in series[1]
