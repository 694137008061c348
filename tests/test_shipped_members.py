"""The shipped members' checkpoints rebuild the shipped ONNX file.

They were rewritten from the legacy SVD steerable basis to the Gram-Schmidt one (README F); if the checkpoints and
the file ever disagree, `histoeq export models/idc-se2-run/member* --invariant-to d4` no longer reproduces the
default model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.test_train_helpers import small_idc_fixture_path, small_threads

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.realdata
def test_members_rebuild_the_shipped_file(idc_dir: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    small_threads()
    data = small_idc_fixture_path(idc_dir, tmp_path_factory)  # real IDC patches
    members = sorted((ROOT / "models" / "idc-se2-run").glob("member*"))
    assert len(members) == 6
    code, _, err = run_cli(["export", *members, "--invariant-to", "d4", "--out", tmp_path / "rebuilt.onnx"], capsys)
    assert code == 0, err
    images = np.ascontiguousarray(np.load(data / "images.npy"))
    shipped = ort.InferenceSession(str(ROOT / "models" / "idc-se2.onnx"), providers=["CPUExecutionProvider"])
    rebuilt = ort.InferenceSession(str(tmp_path / "rebuilt.onnx"), providers=["CPUExecutionProvider"])
    name = shipped.get_inputs()[0].name
    p_shipped = shipped.run(["probabilities"], {name: images})[0]
    p_rebuilt = rebuilt.run(["probabilities"], {name: images})[0]
    assert p_shipped.shape == (len(images), 2)
    assert np.abs(p_shipped - p_rebuilt).max() <= 1e-5
