"""Every model listed in models/index.json keeps the promises its card makes, at the size it ships.

The G-CNN files claim exact invariance to the 8 rotations and mirrors of the pixel grid (D4): a tile turned by
90° or mirrored must get the same probabilities, so no tile can change label. This is checked on the shipped
files themselves (production width, the exported graph, onnxruntime), on real IDC patches, not on a small
stand-in network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histoeq.infer.model_index import read_index
from histoeq.nn.actions import D4, transform_array
from tests.test_train_helpers import small_idc_fixture_path

ROOT = Path(__file__).resolve().parent.parent
_, ENTRIES = read_index(ROOT / "models")

# float32 graphs: a rotated tile visits the same sums in another order, so probabilities agree to rounding only
INVARIANCE_TOLERANCE = 1e-5


def test_the_index_lists_models() -> None:
    assert ENTRIES, "models/index.json lists no model"


@pytest.mark.realdata
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_shipped_model_is_invariant_to_the_eight_grid_symmetries(entry, idc_dir: Path, tmp_path_factory) -> None:  # noqa: ANN001
    from histoeq.infer.onnx_model import OnnxTileModel

    data = small_idc_fixture_path(idc_dir, tmp_path_factory)
    tiles = np.load(data / "images.npy")[:256]
    model = OnnxTileModel(entry.path, device="cpu", intra_op_threads=2)
    assert model.metadata.tile_px == tiles.shape[1]
    reference = model(tiles)
    threshold = getattr(getattr(model.metadata, "operating_point", None), "threshold", 0.5)
    labels = reference[:, -1] >= threshold
    # the tiles must span both sides of the threshold, or "no label change" would hold trivially
    assert labels.any() and not labels.all()
    for element in range(1, D4.order):
        moved = model(np.ascontiguousarray(transform_array(tiles, D4, element)))
        assert np.abs(moved - reference).max() <= INVARIANCE_TOLERANCE, f"D4 element {D4.element(element)}"
        changed = (moved[:, -1] >= threshold) != labels
        # a tile within rounding of the threshold may flip; none other may
        near = np.abs(reference[:, -1] - threshold) <= INVARIANCE_TOLERANCE
        assert not (changed & ~near).any(), f"labels change under D4 element {D4.element(element)}"
