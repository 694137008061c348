"""The group action on images (histoeq.nn.actions): composition law, inverses, the convention pinned to pixels,
torch and numpy agreeing, the exact elements derived from the group, and export's check built from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histoeq.nn.actions import (
    D4,
    element_in,
    exact_subgroup,
    rotate_image,
    subgroup_elements,
    transform_array,
    transform_image,
)
from histoeq.nn.groups import Group, by_name, cyclic, dihedral, trivial

PAIRS = [(g, h) for g in range(D4.order) for h in range(D4.order)]


@pytest.fixture(scope="module")
def nchw() -> torch.Tensor:
    return torch.randint(0, 256, (2, 3, 7, 7), generator=torch.Generator().manual_seed(0)).to(torch.uint8)


@pytest.fixture(scope="module")
def nhwc() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 7, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("g,h", PAIRS)
def test_torch_nchw_composition(nchw: torch.Tensor, g: int, h: int) -> None:
    lhs = transform_image(transform_image(nchw, D4, h), D4, g)
    assert torch.equal(lhs, transform_image(nchw, D4, int(D4.cayley[g, h])))


@pytest.mark.parametrize("g,h", PAIRS)
def test_numpy_nhwc_composition(nhwc: np.ndarray, g: int, h: int) -> None:
    lhs = transform_array(transform_array(nhwc, D4, h), D4, g)
    np.testing.assert_array_equal(lhs, transform_array(nhwc, D4, int(D4.cayley[g, h])))


@pytest.mark.parametrize("g", range(D4.order))
def test_inverses(nchw: torch.Tensor, nhwc: np.ndarray, g: int) -> None:
    inv = int(D4.inverse[g])
    assert torch.equal(transform_image(transform_image(nchw, D4, g), D4, inv), nchw)
    assert torch.equal(transform_image(transform_image(nchw, D4, inv), D4, g), nchw)
    np.testing.assert_array_equal(transform_array(transform_array(nhwc, D4, g), D4, inv), nhwc)
    np.testing.assert_array_equal(transform_array(transform_array(nhwc, D4, inv), D4, g), nhwc)
    # Distinct elements act differently: the 8 images of a generic tile are all different.
    images = {transform_array(nhwc, D4, e).tobytes() for e in range(D4.order)}
    assert len(images) == D4.order


@pytest.mark.parametrize("g", range(D4.order))
def test_torch_and_numpy_agree(nhwc: np.ndarray, g: int) -> None:
    as_nchw = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    torch_out = transform_image(as_nchw, D4, g).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(torch_out, transform_array(nhwc, D4, g))
    np.testing.assert_array_equal(transform_array(nhwc[0], D4, g), transform_array(nhwc, D4, g)[0])  # HWC


def test_convention_on_pixels() -> None:
    """One marked pixel, top-right as displayed: a quarter turn is counter-clockwise, the mirror flips left-right
    and comes first (r·m sends top-right to top-left, then counter-clockwise to bottom-left)."""
    x = np.zeros((5, 5, 1), np.uint8)
    x[0, 4] = 1

    def where(g: int) -> tuple[int, int]:
        r, c, _ = np.argwhere(transform_array(x, D4, g))[0]
        return int(r), int(c)

    assert where(D4.index(1, 0)) == (0, 0)  # top-right -> top-left
    assert where(D4.index(2, 0)) == (4, 0)
    assert where(D4.index(0, 1)) == (0, 0)  # mirror: top-right -> top-left
    assert where(D4.index(1, 1)) == (4, 0)  # mirror first (top-left), then a quarter turn: bottom-left
    assert where(D4.index(3, 1)) == (0, 4)  # the other order: a quarter turn (top-left), then the mirror


@pytest.mark.parametrize("g", range(D4.order))
def test_action_moves_points_as_the_plane_matrix_says(g: int) -> None:
    size = 5
    c = (size - 1) / 2
    for row in range(size):
        for col in range(size):
            x = torch.zeros(1, 1, size, size)
            x[0, 0, row, col] = 1
            r2, c2 = np.argwhere(transform_image(x, D4, g)[0, 0].numpy())[0]
            moved = D4.plane_matrix(g) @ np.array([row - c, col - c])
            np.testing.assert_allclose(moved, [r2 - c, c2 - c], atol=1e-9)


@pytest.mark.parametrize("group,name,order", [
    (trivial(), "C1", 1), (cyclic(2), "C2", 2), (cyclic(4), "C4", 4), (dihedral(4), "D4", 8),
    (cyclic(8), "C4", 4), (dihedral(8), "D4", 8), (cyclic(16), "C4", 4), (cyclic(6), "C2", 2),
    (dihedral(3), "D1", 2),
])
def test_exact_subgroup_is_derived_from_the_group(group: Group, name: str, order: int) -> None:
    exact = exact_subgroup(group)
    assert (exact.name, exact.order) == (name, order)
    assert exact.order == len(group.grid_exact_elements())
    x = torch.randn(1, 2, 6, 6)
    for h in range(exact.order):
        g = element_in(group, exact, h)
        assert g is not None and group.is_grid_exact(g)
        assert torch.equal(transform_image(x, exact, h), transform_image(x, group, g))


def test_non_exact_elements_refuse_the_exact_action() -> None:
    with pytest.raises(ValueError, match="not a multiple of 90"):
        transform_image(torch.zeros(1, 1, 4, 4), cyclic(8), 1)
    with pytest.raises(ValueError, match="not a multiple of 90"):
        transform_array(np.zeros((4, 4, 1)), cyclic(8), 1)


def test_interpolated_rotation_meets_the_exact_action() -> None:
    """The one interpolating rotation turns the way the action does: C8's 2nd element is D4's quarter turn."""
    x = torch.randn(2, 3, 9, 9)
    c8 = cyclic(8)
    assert torch.allclose(rotate_image(x, 89.999), transform_image(x, c8, 2), atol=1e-3)
    assert torch.equal(rotate_image(x, 90.0), transform_image(x, c8, 2))


def test_subgroup_elements() -> None:
    assert subgroup_elements(D4, dihedral(2)) == [0, 2, 4, 6]
    assert subgroup_elements(D4, cyclic(4)) == [0, 1, 2, 3]
    assert subgroup_elements(dihedral(8), D4) == [0, 2, 4, 6, 8, 10, 12, 14]
    with pytest.raises(ValueError, match="not a subgroup"):
        subgroup_elements(cyclic(4), D4)
    assert element_in(cyclic(6), D4, 1) is None and element_in(cyclic(8), D4, 1) == 2


@pytest.mark.parametrize("model,kw,group,count", [
    ("p4m", {}, "D4", 7), ("cnn", {}, None, 0), ("p4", {}, "C4", 3), ("se2", {"orientations": 8}, "C4", 3),
])
def test_export_check_lists_the_groups_exact_elements(model: str, kw: dict, group: str | None, count: int) -> None:
    """The invariance check of `histoeq export` comes from the metadata's group, whatever the model is called."""
    from histoeq import models
    from histoeq.export.exporter import _model_metadata
    from histoeq.export.verify import exact_transforms

    net = models.create(model, width=4, **kw)
    info = {"classes": ["a", "b"], "tile_px": 50, "mpp": 4.0, "model_config": dict(net.config),
            "normalisation": {"mean": [0.5] * 3, "std": [0.2] * 3}}
    meta = _model_metadata(net, info, fp16=False, source=None)
    name, transforms = exact_transforms(meta.group["name"])
    assert (name, len(transforms)) == (group, count)
    tiles = np.random.default_rng(1).integers(0, 256, (2, 50, 50, 3), dtype=np.uint8)
    expected = exact_subgroup(by_name(meta.group["name"]))
    for h, t in enumerate(transforms, start=1):  # the non-identity elements, in the group's order
        np.testing.assert_array_equal(t(tiles), transform_array(tiles, expected, h))


def test_export_check_for_a_view_averaged_model_is_d4() -> None:
    from histoeq import models
    from histoeq.export.verify import exact_transforms
    from histoeq.models.view_average import make_invariant

    averaged = make_invariant(models.create("se2", width=4, orientations=8))
    name, transforms = exact_transforms(averaged.group.name)
    assert averaged.group.name == "D8" and (name, len(transforms)) == ("D4", 7)
    assert exact_transforms("not-a-group") == (None, [])
