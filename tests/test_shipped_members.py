"""The checkpoints kept beside each shipped model rebuild the shipped ONNX file.

A shipped file is only as trustworthy as the way back to its weights: `histoeq export` on the kept run folder or
members (with the options below and the file's own operating point) must give the same probabilities. The se2
members were rewritten from the legacy SVD steerable basis to the Gram-Schmidt one; if checkpoints and file ever
disagree, the file can no longer be reproduced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histoeq.infer.model_index import read_index
from tests.conftest import run_cli
from tests.test_train_helpers import small_idc_fixture_path, small_threads

ROOT = Path(__file__).resolve().parent.parent
_, ENTRIES = read_index(ROOT / "models")

# index name -> (run folders or member checkpoints under models/, extra export options)
REBUILD = {
    "idc-se2": ("idc-se2-run/member*", ["--invariant-to", "d4"]),
    "idc-p4m-w8": ("idc-p4m-w8-run", []),
}


def test_every_shipped_model_says_how_it_is_rebuilt() -> None:
    assert {e.name for e in ENTRIES} <= set(REBUILD)


@pytest.mark.realdata
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_kept_checkpoints_rebuild_the_shipped_file(entry, idc_dir: Path, tmp_path: Path,  # noqa: ANN001
                                                   tmp_path_factory: pytest.TempPathFactory,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from histoeq.infer.onnx_model import OnnxTileModel

    small_threads()
    data = small_idc_fixture_path(idc_dir, tmp_path_factory)  # real IDC patches
    pattern, options = REBUILD[entry.name]
    runs = sorted((ROOT / "models").glob(pattern))
    assert runs, f"no checkpoints at models/{pattern}"
    shipped = OnnxTileModel(entry.path, device="cpu")
    point = shipped.metadata.operating_point
    if point is not None:
        options = [*options, "--threshold", str(point.threshold), "--context", point.context,
                   "--chosen-by", point.chosen_by]
    code, _, err = run_cli(["export", *runs, *options, "--out", tmp_path / "rebuilt.onnx"], capsys)
    assert code == 0, err
    rebuilt = OnnxTileModel(tmp_path / "rebuilt.onnx", device="cpu")
    assert rebuilt.metadata.operating_point == point
    images = np.ascontiguousarray(np.load(data / "images.npy"))
    p_shipped, p_rebuilt = shipped(images), rebuilt(images)
    assert p_shipped.shape == (len(images), 2)
    assert np.abs(p_shipped - p_rebuilt).max() <= 1e-5
