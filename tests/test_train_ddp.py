"""`histoeq train` under torchrun: 2 gloo processes on CPU match a single-process run.

The numeric comparison uses a tiny model without BatchNorm or dropout (registered by this file when it runs as a
script): BatchNorm statistics are per process under DDP by design, so a BN model cannot match a 1-process run
exactly. What is compared is the part this repo controls: sharding by DistributedSampler, per-sample augmentation
draws, loss normalisation by the global batch, rank-0-only writing. A second test runs the real ``-m histoeq``
entry point with the `cnn` model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_train_helpers import small_idc_fixture_path

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.realdata, pytest.mark.slow]
ARGS = ["--epochs", "2", "--batch-size", "32", "--fraction", "0.5", "--augment", "rot90+flip", "--device", "cpu",
        "--seed", "3", "--lr", "0.01"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"})
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


@pytest.fixture(scope="module")
def small_idc(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_idc_fixture_path(idc_dir, tmp_path_factory)


def test_two_gloo_processes_match_one(small_idc: Path, tmp_path: Path) -> None:
    script = str(Path(__file__).resolve())
    common = ["train", "--data", str(small_idc), "--model", "tinyplain", *ARGS]
    single = subprocess.run([sys.executable, script, *common, "--out", str(tmp_path / "one")], env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    multi = subprocess.run(_torchrun(script, *common, "--out", str(tmp_path / "two")), env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert two["sampler"]["world_size"] == 2 and one["sampler"]["world_size"] == 1
    for key, value in one["state_dict"].items():
        assert torch.allclose(value, two["state_dict"][key], atol=1e-5, rtol=1e-4), key
    assert one["state_dict"]["head.weight"].abs().sum() > 0
    assert json.loads((tmp_path / "two" / "run.json").read_text())["world_size"] == 2


def test_torchrun_module_entry_with_cnn(small_idc: Path, tmp_path: Path) -> None:
    proc = subprocess.run(_torchrun("-m", "histoeq", "train", "--data", str(small_idc), "--model", "cnn", "--width",
                                    "4", "--max-steps", "2", *ARGS, "--out", str(tmp_path / "run")),
                          env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished"
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert proc.stdout.count("histoeq train:") == 1  # only rank 0 prints the result table


def _register_tiny_model() -> None:
    from torch import nn

    from histoeq.models import register_model

    class TinyPlain(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 5, stride=2)
            self.head = nn.Linear(4, num_classes)
            self.config = {"name": "tinyplain", "num_classes": num_classes}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    def tinyplain(*, num_classes: int = 2) -> nn.Module:
        return TinyPlain(num_classes)

    register_model(tinyplain)


if __name__ == "__main__":  # entry point for the subprocesses above
    torch.set_num_threads(1)
    _register_tiny_model()
    from histoeq.cli import main

    sys.exit(main(sys.argv[1:]))
