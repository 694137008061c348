"""`--resume` after an interruption ends with exactly the weights of an unbroken run (CPU, fixed seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from histoeq.train.config import TrainConfig
from histoeq.train.trainer import train
from tests.conftest import run_cli
from tests.test_train_helpers import small_idc_fixture_path, small_threads

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def small_idc(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    small_threads()
    return small_idc_fixture_path(idc_dir, tmp_path_factory)


class Interrupt(Exception):
    pass


def _config(data: Path, out: Path, **kw: object) -> TrainConfig:
    # flip+rot90 exercises the per-epoch augmentation draws; dropout is on (default) to exercise the RNG state.
    return TrainConfig(data=data, model="cnn", out=out, width=4, epochs=3, max_steps=3, batch_size=16,
                       augment="rot90+flip", device="cpu", seed=7, **kw)


def test_resume_matches_unbroken_run(small_idc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(_config(small_idc, tmp_path / "unbroken"))

    def stop_in_second_epoch(task: str, done: int, total: int | None = None, message: str = "") -> None:
        if done > 4:  # step 5 of 9: epoch 1 finished and saved, epoch 2 half done
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_config(small_idc, tmp_path / "broken"), progress=stop_in_second_epoch)
    assert len((tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "broken" / "run.json").read_text())["status"] == "running"

    # Without --resume the folder is refused; with it the run continues from epoch 2.
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "cnn", "--out", tmp_path / "broken",
                            "--width", "4", "--epochs", "3", "--max-steps", "3", "--batch-size", "16",
                            "--augment", "rot90+flip", "--device", "cpu", "--seed", "7"], capsys)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    result = train(_config(small_idc, tmp_path / "broken", resume=True))
    assert result["epochs_run"] == 3
    info = json.loads((tmp_path / "broken" / "run.json").read_text())
    assert info["resumed_from_epoch"] == 1 and info["status"] == "finished"

    a = torch.load(tmp_path / "unbroken" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "last.pt", weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["history"][-1]["val_auc"] == b["history"][-1]["val_auc"]
    lines_a = (tmp_path / "unbroken" / "metrics.jsonl").read_text().splitlines()
    lines_b = (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()
    assert len(lines_a) == len(lines_b) == 3
    strip = lambda line: {k: v for k, v in json.loads(line).items() if not k.endswith("seconds")}  # noqa: E731
    assert [strip(x) for x in lines_a] == [strip(x) for x in lines_b]


def test_resume_with_changed_options_is_refused(small_idc: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    train(_config(small_idc, tmp_path / "run"))
    code, _, err = run_cli(["train", "--data", small_idc, "--model", "p4m", "--out", tmp_path / "run", "--width", "4",
                            "--epochs", "3", "--max-steps", "3", "--batch-size", "16", "--augment", "rot90+flip",
                            "--device", "cpu", "--seed", "7", "--resume"], capsys)
    assert code == 2 and "cannot resume" in err and len(err.strip().splitlines()) == 1
