"""Shared fixtures. Tests that need the real data skip with a reason when ../shared/data is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HISTOEQ_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real H&E data); skips the test when it is absent."""
    if not (SHARED_DATA / "idc" / "labels.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set HISTOEQ_SHARED_DATA or provide ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def idc_dir(shared_data: Path) -> Path:
    return shared_data / "idc"


@pytest.fixture(scope="session")
def cmu_svs(shared_data: Path) -> Path:
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run `histoeq ARGS` in-process; returns (exit code, stdout, stderr)."""
    from histoeq.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """The bad-input contract: exit code 2, one `error:` line on stderr holding every fragment, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


TINY_INFO = {"model_config": {"name": "tiny"}, "classes": ["a", "b"], "tile_px": 50, "mpp": 4.0,
             "normalisation": {"mean": [0.5] * 3, "std": [0.25] * 3}}


def export_tiny_onnx(path: Path, seed: int = 0, **export_options) -> Path:  # noqa: ANN003 (export_model's options)
    """A two-class conv net of random weights (seeded) exported with the metadata predict needs: a fast stand-in
    for a trained model wherever only the pipeline around the model is tested."""
    from histoeq.export.exporter import export_model

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2)).eval()
    return export_model(net, TINY_INFO, path, **export_options).path


@pytest.fixture
def random_rgb_tiff(tmp_path: Path) -> Path:
    """A small flat RGB TIFF of random pixels at 4 µm/px: a slide for tests of the pipeline around the model."""
    import numpy as np
    import tifffile

    path = tmp_path / "s.tiff"
    rgb = np.random.default_rng(0).integers(0, 255, (300, 260, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, photometric="rgb", resolution=(2500, 2500), resolutionunit="CENTIMETER")
    return path
