"""What commands print off a terminal (batch jobs, pipes): one plain line per step, --quiet, --log-json, tables at
full width; renamed options refused with their new name; outputs replaced only with --overwrite."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from histoeq.progress import StepLog, emit, fan_out, null_progress
from tests.conftest import assert_one_line_error, run_cli

TRAIN = ["--model", "cnn", "--epochs", "2", "--max-steps", "1", "--batch-size", "16", "--width", "4",
         "--device", "cpu"]
TIME = r"\d\d:\d\d:\d\d "


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic two-class dataset (bright red channel = positive), two patients per split."""
    from histoeq.data.dataset import DatasetWriter

    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("synthetic") / "ds"
    images, rows = [], []
    for split, patients in (("train", "ab"), ("val", "cd"), ("test", "ef")):
        for patient in patients:
            for i in range(8):
                image = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)
                image[..., 0] = 200 if i % 2 else 40
                images.append(image)
                rows.append({"label": i % 2, "patient": patient, "slide": patient, "x": 50 * i, "y": 0,
                             "split": split, "source": f"{patient}{i}.png"})
    with DatasetWriter(out, tile_px=50, classes=["neg", "pos"], mpp=4.0) as writer:
        writer.add(np.stack(images), rows)
    return out


def test_train_prints_one_line_per_epoch_and_json_events(dataset: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "events.jsonl"
    code, out, err = run_cli(["--log-json", log, "train", "--data", dataset, "--out", tmp_path / "run", *TRAIN],
                             capsys)
    assert code == 0 and err == "", err
    epochs = [line for line in out.splitlines() if re.match(TIME + r"epoch \d/2: train loss ", line)]
    assert len(epochs) == 2 and all("val auc" in line and "eta" in line for line in epochs), out
    assert "histoeq train:" in out  # the summary table follows the progress lines

    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events[0]["event"] == "start" and events[0]["argv"][-len(TRAIN):] == TRAIN
    assert events[-1] == {"event": "end", "exit_code": 0, "error": None, "time": events[-1]["time"]}
    epoch_events = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epoch_events] == [1, 2] and all(e["epochs"] == 2 for e in epoch_events)
    assert all(0 <= e["val_auc"] <= 1 and e["train_loss"] > 0 and e["eta_s"] >= 0 for e in epoch_events)
    assert any(e["event"] == "progress" and e["task"] == "train" for e in events)

    # A failure is logged as the end event, appended to the same file; stderr keeps its single line.
    code, out, err = run_cli(["--log-json", log, "train", "--data", dataset, "--out", tmp_path / "run", *TRAIN],
                             capsys)
    assert_one_line_error(code, err, "already holds a run")
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["event"] == "end" and last["exit_code"] == 2 and "already holds a run" in last["error"]


def test_quiet_prints_nothing_but_errors(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--quiet", "train", "--data", dataset, "--out", tmp_path / "run", *TRAIN]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and out == "" and err == "", (out, err)
    assert (tmp_path / "run" / "best.pt").is_file()
    code, out, err = run_cli(args, capsys)
    assert out == ""
    assert_one_line_error(code, err, "already holds a run")


def test_eval_reports_each_view_with_counts(dataset: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--quiet", "train", "--data", dataset, "--out", tmp_path / "run", *TRAIN], capsys)[0] == 0
    code, out, err = run_cli(["eval", tmp_path / "run", "--data", dataset, "--rotations", "4", "--device", "cpu",
                              "--out", tmp_path / "eval"], capsys)
    assert code == 0, err
    views = [line for line in out.splitlines() if re.match(TIME + r".* \d/4 \(\d+%\) view ", line)]
    assert len(views) == 4 and " 4/4 (100%) view 270: AUC " in views[-1], out


def test_step_log_reports_coarse_steps_and_throttles_fine_ones() -> None:
    now = [0.0]
    text, json_lines = io.StringIO(), io.StringIO()
    log = StepLog(text=text, json_lines=json_lines, interval=30.0, clock=lambda: now[0])
    for view in range(1, 5):  # a few steps: every one is a line
        now[0] += 1
        log("eval", view, 4, f"view {view}")
    for tile in range(1, 10_001):  # many steps: one line per 30 s, and the last
        now[0] += 0.01
        log("slide.svs", tile, 10_000, "500 tiles/s")
    emit(log, "epoch", epoch=3, epochs=20, train_loss=0.25, val_auc=float("nan"), eta_s=125.0)
    lines = text.getvalue().splitlines()
    assert [line.split()[2] for line in lines[:4]] == ["1/4", "2/4", "3/4", "4/4"]
    tiles = [line for line in lines if " slide.svs " in line]
    assert len(tiles) == 5 and tiles[-1].split()[2] == "10000/10000" and "ETA" in tiles[1], tiles
    assert re.fullmatch(TIME + r"epoch 3/20: train loss 0\.25, val auc nan, eta 2m05s", lines[-1]), lines[-1]
    records = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert len(records) == len(lines) and records[-1]["val_auc"] is None and records[-1]["epoch"] == 3
    assert records[0] == {"event": "progress", "task": "eval", "done": 1, "total": 4, "message": "view 1",
                          "elapsed_s": 0.0, "eta_s": None, "time": records[0]["time"]}


def test_plain_callbacks_ignore_events() -> None:
    calls: list[tuple] = []
    emit(null_progress, "epoch", epoch=1)
    both = fan_out(lambda *a: calls.append(a), StepLog())
    both("train", 1, 2, "")
    emit(both, "epoch", epoch=1)
    assert calls == [("train", 1, 2, "")]


def test_tables_written_to_a_pipe_are_not_cut(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from histoeq.cli._render import configure, print_table

    monkeypatch.delenv("COLUMNS", raising=False)
    configure()
    print_table("wide", ["Name", "Value"], [["x" * 150, "y" * 60]])
    out = capsys.readouterr().out
    assert "x" * 150 in out and "y" * 60 in out


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "d", "--model", "cnn", "--out", "o", "--num-workers", "2"], "--num-workers is now --workers"),
    (["predict", "x.svs", "--mpp", "0.5"], "--mpp is now --slide-mpp"),
    (["bench", "predict", "x.svs", "--mpp", "0.5"], "--mpp is now --slide-mpp"),
    (["predict", "x.svs", "--tissue-threshold", "0"], "--tissue-threshold is now --min-tissue"),
    (["eval", "r", "--data", "d", "--out", "o", "--tta", "d4"], "--tta is now --invariant-to"),
    (["import", "f", "--out", "o", "--force"], "--force is now --overwrite"),
    (["extract", "s.svs", "--out", "o", "--force"], "--force is now --overwrite"),
    (["models", "--quiet"], "--quiet is a global option: put it before the command (histoeq --quiet models"),
])
def test_old_option_names_are_refused_with_the_new_name(capsys: pytest.CaptureFixture[str], args: list[str],
                                                        message: str) -> None:
    code, out, err = run_cli(args, capsys)
    assert_one_line_error(code, err, message)


def test_existing_outputs_need_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "model.onnx"
    existing.write_text("keep")
    code, _, err = run_cli(["export", tmp_path / "no-run", "--out", existing], capsys)
    assert_one_line_error(code, err, str(existing), "--overwrite")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text("{}")
    code, _, err = run_cli(["eval", tmp_path / "no-run", "--data", tmp_path, "--out", tmp_path / "eval"], capsys)
    assert_one_line_error(code, err, "eval.json", "--overwrite")
    assert existing.read_text() == "keep" and (tmp_path / "eval" / "eval.json").read_text() == "{}"
    # with --overwrite the check passes and the command goes on to its own input checks
    code, _, err = run_cli(["export", tmp_path / "no-run", "--out", existing, "--overwrite"], capsys)
    assert code == 2 and "--overwrite" not in err and "no-run" in err, err


def test_step_log_restarts_a_task_seen_again_from_the_start() -> None:
    now = [100.0]
    text = io.StringIO()
    log = StepLog(text=text, clock=lambda: now[0])
    log("train", 10, 10, "")  # one sweep cell ends
    now[0] += 500
    log("train", 1, 10, "")  # the next begins: a line, with its own elapsed time
    assert text.getvalue().splitlines()[-1].endswith("train 1/10 (10%), elapsed 0s")
