"""`histoeq sweep`: a tiny grid runs, writes summary.csv + group statistics + two plots, and a rerun skips it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli
from tests.test_train_helpers import small_idc_fixture_path, small_threads

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def small_idc(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    small_threads()
    return small_idc_fixture_path(idc_dir, tmp_path_factory)


def test_sweep_grid_and_resume(small_idc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["sweep", "--data", small_idc, "--out", tmp_path / "sweep", "--models", "cnn,p4m", "--fractions", "1,0.5",
            "--augment", "none", "--seeds", "2", "--epochs", "1", "--max-steps", "1", "--batch-size", "32",
            "--width", "4", "--rotations", "8", "--device", "cpu"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "8 cells trained, 0 already done" in out.replace("\n", " ")
    sweep = tmp_path / "sweep"
    cells = pd.read_csv(sweep / "summary.csv")
    assert len(cells) == 8 and set(cells["model"]) == {"cnn", "p4m"} and set(cells["fraction"]) == {0.5, 1.0}
    assert {f"auc_{a:g}" for a in range(0, 360, 45)} <= set(cells.columns)
    for col in ("auc_identity", "auc_mean_angles", "balanced_accuracy_mean_angles", "f1_mean_angles"):
        assert cells[col].between(0, 1).all(), col
    assert (cells.loc[cells["model"] == "p4m", "spread_exact"] <= 1e-5).all()
    # Label flips over the 8 D4 transforms: none for the D4-invariant p4m (bar float ties at p = 0.5).
    assert cells["label_change_d4"].between(0, 1).all()
    assert (cells.loc[cells["model"] == "p4m", "label_change_d4"] <= 0.01).all()
    groups = pd.read_csv(sweep / "summary_groups.csv")
    assert len(groups) == 4 and (groups["seeds"] == 2).all()
    assert (groups["auc_mean_angles_ci95_low"] <= groups["auc_mean_angles_mean"]).all()
    assert (groups["auc_mean_angles_mean"] <= groups["auc_mean_angles_ci95_high"]).all()
    for plot in ("metric_vs_fraction.png", "metric_vs_angle.png"):
        assert (sweep / plot).stat().st_size > 1000
    # An interrupted cell (trained, not evaluated) is finished on rerun; finished cells are skipped, and one
    # finished before the D4 share existed gets it added.
    (sweep / "runs" / "cnn_none_f1_s0" / "cell.json").unlink()
    old_cell = sweep / "runs" / "cnn_none_f0.5_s1" / "cell.json"
    d4 = json.loads(old_cell.read_text()).pop("label_change_d4")
    old_cell.write_text(json.dumps({k: v for k, v in json.loads(old_cell.read_text()).items()
                                    if k != "label_change_d4"}))
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "1 cells trained, 7 already done" in out.replace("\n", " ")
    assert len(pd.read_csv(sweep / "summary.csv")) == 8
    assert json.loads(old_cell.read_text())["label_change_d4"] == pytest.approx(d4)
    # Finished cells are not "done" for a sweep with other training options: one line, exit 2, nothing trained.
    changed = list(args)
    changed[changed.index("--width") + 1] = "6"
    code, _, err = run_cli(changed, capsys)
    assert code == 2 and "finished with other options" in err and "width: 4 -> 6" in err and "Traceback" not in err
    # A bad --rotations fails before the first cell trains, not after.
    no_eval = [*args[:args.index("--out") + 1], str(tmp_path / "other"), *args[args.index("--out") + 2:]]
    no_eval[no_eval.index("--rotations") + 1] = "0"
    code, _, err = run_cli(no_eval, capsys)
    assert code == 2 and "--rotations must be at least 1" in err and not (tmp_path / "other").exists()
    # A damaged cell record names itself and the way out, for the resume and the report alike.
    old_cell.write_text('{"model": ')
    for command in (args, ["sweep", "--out", sweep, "--report-only"]):
        code, _, err = run_cli(command, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert f"{old_cell}: not valid JSON" in lines[0] and "delete cnn_none_f0.5_s1 to retrain" in lines[0]


def test_sweep_report_only_gathers_partial_grids(small_idc: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    common = ["--data", small_idc, "--out", sweep, "--fractions", "1", "--seeds", "1", "--epochs", "1",
              "--max-steps", "1", "--batch-size", "32", "--width", "4", "--rotations", "4", "--device", "cpu"]
    for models, augment in (("cnn", "none,rot90"), ("p4m", "none")):
        code, _, err = run_cli(["sweep", "--models", models, "--augment", augment, *common], capsys)
        assert code == 0, err
    assert len(pd.read_csv(sweep / "summary.csv")) == 1  # each sweep summarises only its own grid
    # --first-seed: one process per seed, e.g. on a shared GPU; seed 1 alone, seed 0 is neither rerun nor needed.
    seed1 = [*common[:common.index("--seeds")], "--seeds", "1", "--first-seed", "1",
             *common[common.index("--seeds") + 2:]]
    code, out, err = run_cli(["sweep", "--models", "cnn", "--augment", "none", *seed1], capsys)
    assert code == 0, err
    assert "1 cells trained, 0 already done" in out.replace("\n", " ")
    assert (sweep / "runs" / "cnn_none_f1_s1" / "cell.json").exists()
    code, out, err = run_cli(["sweep", "--out", sweep, "--report-only"], capsys)
    assert code == 0, err
    assert "0 cells trained, 4 already done" in out.replace("\n", " ")
    cells = pd.read_csv(sweep / "summary.csv")
    assert sorted(zip(cells["model"], cells["augment"], cells["seed"])) == [
        ("cnn", "none", 0), ("cnn", "none", 1), ("cnn", "rot90", 0), ("p4m", "none", 0)]
    claims = pd.read_csv(sweep / "claims.csv")
    assert set(claims["claim"]) == {"C1"} and set(claims["versus"]) == {"cnn / rot90 @ 1"}  # one fraction: no C2
    tables = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep_tables.py"), str(sweep)],
                            capture_output=True, text=True, check=True).stdout
    assert "| p4m | none | 1 | 1 |" in tables and "| cnn | none | 1 | 2 |" in tables
    assert "| p4m | 1 | cnn / rot90 @ 1 |" in tables and "too few seeds" in tables and "nan" not in tables


def test_sweep_with_flips_takes_the_d4_share_from_its_own_evaluation(
        small_idc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from histoeq.data.dataset import PatchDataset
    from histoeq.evaluate.predictors import load_checkpoint_predictor
    from histoeq.evaluate.rotation_eval import prepare_inputs
    from histoeq.lab.sweep import d4_label_change

    sweep = tmp_path / "sweep"
    args = ["sweep", "--data", small_idc, "--out", sweep, "--models", "cnn", "--augment", "none", "--fractions", "1",
            "--seeds", "1", "--epochs", "1", "--max-steps", "1", "--batch-size", "32", "--width", "4",
            "--rotations", "4", "--flips", "--device", "cpu"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    cell = json.loads((sweep / "runs" / "cnn_none_f1_s0" / "cell.json").read_text())
    # Measured separately, over the 8 D4 views prepared on their own: the same share.
    d4_inputs = prepare_inputs(PatchDataset.open(small_idc), split="test", rotations=4, flips=True)
    predictor = load_checkpoint_predictor(sweep / "runs" / "cnn_none_f1_s0", torch.device("cpu"))
    assert cell["label_change_d4"] == pytest.approx(d4_label_change(predictor, d4_inputs))


def test_sweep_report_only_without_cells_and_sweep_without_data(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["sweep", "--out", tmp_path / "empty", "--report-only"], capsys)
    assert code == 2 and "no finished sweep cells" in err and "Traceback" not in err
    code, _, err = run_cli(["sweep", "--out", tmp_path / "empty"], capsys)
    assert code == 2 and "--data is required" in err
    assert not (tmp_path / "empty").exists()


def test_welch_interval_matches_scipy() -> None:
    from scipy import stats

    from histoeq.evaluate.claims import welch_interval

    a, b = np.array([0.91, 0.93, 0.90, 0.94]), np.array([0.88, 0.89, 0.87])
    diff, low, high = welch_interval(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert np.isnan(welch_interval(a, b[:1])[1])


def test_claim_comparisons_verdicts_and_spread() -> None:
    from histoeq.evaluate.claims import angle_spread, claim_comparisons

    rows = []
    for seed in range(3):
        jitter = 0.001 * seed
        rows += [{"model": "cnn", "augment": "rot90", "fraction": 1.0, "auc_mean_angles": 0.85 + jitter},
                 {"model": "cnn", "augment": "none", "fraction": 1.0, "auc_mean_angles": 0.84 + jitter},
                 {"model": "cnn", "augment": "rot90", "fraction": 0.25, "auc_mean_angles": 0.80 + jitter},
                 {"model": "p4m", "augment": "none", "fraction": 1.0, "auc_mean_angles": 0.90 + jitter},
                 {"model": "p4m", "augment": "none", "fraction": 0.25, "auc_mean_angles": 0.85 - jitter}]
    cells = pd.DataFrame(rows)
    for angle in range(0, 360, 45):
        cells[f"auc_{angle}"] = cells["auc_mean_angles"] + (0.01 if angle % 90 else 0.0)
    cells["spread_exact"], cells["label_change_fraction"] = 0.0, 0.02
    claims = claim_comparisons(cells, metrics=("auc_mean_angles",))
    by_key = {(c["claim"], c["fraction"], c["versus"]): c for c in claims.to_dict(orient="records")}
    assert by_key[("C1", 1.0, "cnn / rot90 @ 1")]["verdict"] == "higher"
    assert by_key[("C1", 0.25, "cnn / rot90 @ 0.25")]["difference"] == pytest.approx(0.849 - 0.801)
    c2 = by_key[("C2", 0.25, "cnn / rot90 @ 1")]
    assert c2["verdict"] == "not separated" and c2["ci95_low"] < 0 < c2["ci95_high"]
    assert by_key[("C2", 0.25, "cnn / none @ 1")]["seeds_versus"] == 3
    spread = angle_spread(cells).set_index(["model", "augment", "fraction"])
    assert spread.loc[("p4m", "none", 1.0), "auc_range_angles"] == pytest.approx(0.01)
    assert spread.loc[("p4m", "none", 1.0), "auc_range_exact"] == pytest.approx(0.0)


def test_claims_without_gcnn_cells_keep_their_columns() -> None:
    from histoeq.evaluate.claims import CLAIM_COLUMNS, claim_comparisons

    cells = pd.DataFrame([{"model": "cnn", "augment": "none", "fraction": 1.0, "auc_mean_angles": 0.9,
                           "balanced_accuracy_mean_angles": 0.8, "f1_mean_angles": 0.7}])
    claims = claim_comparisons(cells)
    assert claims.empty and list(claims.columns) == CLAIM_COLUMNS


def test_cv_sweep_writes_out_of_fold_predictions(small_idc: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from histoeq.data.dataset import PatchDataset
    from histoeq.data.folds import patient_folds

    code, _, err = run_cli(["sweep", "--data", small_idc, "--out", tmp_path / "cv", "--models", "cnn", "--fractions",
                            "1", "--augment", "none", "--seeds", "2", "--cv", "2", "--epochs", "1", "--max-steps",
                            "1", "--batch-size", "32", "--width", "4", "--rotations", "4", "--device", "cpu",
                            "--select", "last", "--ema", "0.9"], capsys)
    assert code == 0, err
    oof = pd.read_csv(tmp_path / "cv" / "oof.csv", dtype={"patient": str})
    index = PatchDataset.open(small_idc).index
    folds = patient_folds(index, 2)
    pool = index[folds >= 0]
    # Every train+val patch exactly once, predicted by the model of its own patient fold.
    assert sorted(oof["id"]) == sorted(pool["id"])
    assert (oof["fold"].to_numpy() == folds.loc[oof["id"]].to_numpy()).all()
    assert (oof["seed"] == oof["fold"]).all()
    assert {"model", "augment", "fraction", "patient", "x", "y", "label"} <= set(oof.columns)


def test_claims_carry_holm_adjusted_verdicts() -> None:
    from histoeq.evaluate.claims import claim_comparisons

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(5):
        rows += [{"model": "cnn", "augment": "rot90", "fraction": f,
                  "auc_mean_angles": 0.80 + 0.02 * rng.standard_normal()}
                 for f in (0.25, 1.0)]
        rows += [{"model": "p4m", "augment": "none", "fraction": 1.0, "auc_mean_angles": 0.90 + 0.001 * seed},
                 {"model": "p4m", "augment": "none", "fraction": 0.25,
                  "auc_mean_angles": 0.81 + 0.02 * rng.standard_normal()}]
    claims = claim_comparisons(pd.DataFrame(rows), metrics=("auc_mean_angles",))
    assert (claims["p_holm"] >= claims["p_value"]).all() and (claims["p_holm"] <= 1.0).all()
    strong = claims[(claims["claim"] == "C1") & (claims["fraction"] == 1.0)].iloc[0]
    assert strong["p_holm"] < 0.05 and strong["verdict_holm"] == "higher"
    weak = claims[(claims["claim"] == "C1") & (claims["fraction"] == 0.25)].iloc[0]
    assert weak["verdict_holm"] == "not separated"


def test_welch_p_matches_scipy() -> None:
    from scipy import stats

    from histoeq.evaluate.claims import welch_p

    a, b = np.array([0.81, 0.84, 0.80, 0.86]), np.array([0.78, 0.79, 0.83])
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert np.isnan(welch_p(a, b[:1]))
