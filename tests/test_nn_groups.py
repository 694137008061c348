"""Group axioms and the exact filter transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histoeq.nn.actions import rotate_image, transform_image
from histoeq.nn.groups import by_name, cyclic, dihedral, trivial
from histoeq.nn.kernels import METHODS, kernel_transforms, permutation_matrix

GROUPS = [trivial(), cyclic(4), dihedral(4), cyclic(8), cyclic(16), dihedral(8)]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_cayley_table_is_a_group(group):
    table, n = group.cayley, group.order
    assert all(sorted(row) == list(range(n)) for row in table)  # Latin square
    assert (table[0] == np.arange(n)).all() and (table[:, 0] == np.arange(n)).all()  # identity is 0
    assert (table[np.arange(n), group.inverse] == 0).all()
    a, b, c = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    assert (table[table[a, b], c] == table[a, table[b, c]]).all()  # associativity


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_plane_action_is_a_homomorphism(group):
    for a in range(group.order):
        for b in range(group.order):
            composed = group.plane_matrix(a) @ group.plane_matrix(b)
            np.testing.assert_allclose(composed, group.plane_matrix(group.cayley[a, b]), atol=1e-12)


def test_image_action_matches_group_law():
    group = dihedral(4)
    x = torch.randn(2, 3, 7, 6)
    for a in range(8):
        for b in range(8):
            lhs = transform_image(transform_image(x, group, b), group, a)
            assert torch.equal(lhs, transform_image(x, group, group.cayley[a, b]))


def test_regular_representation_is_a_homomorphism():
    group = dihedral(4)
    for a in range(8):
        for b in range(8):
            pa, pb = group.regular_permutation(a), group.regular_permutation(b)
            # (L_a L_b F)[h] = (L_b F)[pa[h]] = F[pb[pa[h]]]
            assert (pb[pa] == group.regular_permutation(group.cayley[a, b])).all()


def test_by_name_aliases():
    assert by_name("p4m") == dihedral(4) and by_name("p4") == cyclic(4) and by_name("C8") == cyclic(8)
    with pytest.raises(ValueError):
        by_name("SO3")


@pytest.mark.parametrize("size", [3, 4, 5])
def test_permutation_matrix_is_rot90_and_flip(size):
    group = dihedral(4)
    kernel = torch.randn(size, size)
    for g in range(8):
        moved = (torch.as_tensor(permutation_matrix(group, g, size), dtype=torch.float32) @ kernel.reshape(-1))
        assert torch.equal(moved.reshape(size, size), transform_image(kernel, group, g))


@pytest.mark.parametrize("method", [m for m in METHODS if m != "pixel"])
def test_resampled_transforms_are_exact_at_90_degrees_and_turn_like_rot90(method):
    group = cyclic(8)
    maps = torch.as_tensor(kernel_transforms(group, 5, method), dtype=torch.float64)
    params = torch.randn(maps.shape[-1], dtype=torch.float64)
    base = (maps[0] @ params).reshape(5, 5)
    for g in (2, 4, 6):  # 90°, 180°, 270°
        assert torch.allclose((maps[g] @ params).reshape(5, 5), torch.rot90(base, g // 2), atol=1e-12)
    # 45° turns the same way as rot90: closer to rotate_image(+45°) than to rotate_image(-45°).
    rotated = (maps[1] @ params).reshape(1, 1, 5, 5).float()
    plus, minus = rotate_image(base[None, None].float(), 45.0), rotate_image(base[None, None].float(), -45.0)
    assert (rotated - plus).norm() < (rotated - minus).norm()


def test_pixel_method_refuses_non_grid_rotations():
    with pytest.raises(ValueError):
        kernel_transforms(cyclic(8), 3, "pixel")


def test_rotate_image_turns_like_rot90():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 1, 4], x[0, 0, 2, 6] = 1.0, 0.5
    assert torch.allclose(rotate_image(x, 89.999), torch.rot90(x, 1, (-2, -1)), atol=1e-3)
    assert torch.equal(rotate_image(x, 90.0), torch.rot90(x, 1, (-2, -1)))
