"""Feature-map equivariance of every layer, eval-mode caching and the plain-module export."""

from __future__ import annotations

import pytest
import torch

from histoeq.nn import (
    EquivariantPool2d,
    GroupBatchNorm2d,
    GroupConv2d,
    GroupPool,
    LiftingConv2d,
    cyclic,
    dihedral,
    transform_feature_map,
    transform_image,
)

# (group, filter method): D4 and C4 exact by permutation; C8/C16 resampled, checked at their 90° multiples.
CASES = [(dihedral(4), "pixel"), (cyclic(4), "pixel"), (cyclic(8), "steerable"), (cyclic(8), "bilinear"),
         (cyclic(8), "bspline"), (cyclic(16), "steerable"), (dihedral(8), "bilinear")]
IDS = [f"{g.name}-{m}" for g, m in CASES]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("group,method", CASES, ids=IDS)
@pytest.mark.parametrize("size", [13, 14])
def test_lifting_conv_is_equivariant(group, method, size):
    torch.manual_seed(0)
    layer = LiftingConv2d(3, 4, group, 5, padding=2, method=method, bias=True).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    for g in group.grid_exact_elements():
        assert _rel(layer(transform_image(x, group, g)), transform_feature_map(layer(x), group, g)) < 1e-10


@pytest.mark.parametrize("group,method", CASES, ids=IDS)
def test_group_conv_is_equivariant(group, method):
    torch.manual_seed(0)
    layer = GroupConv2d(3, 2, group, 3, padding=1, method=method).double()
    y = torch.randn(2, 3 * group.order, 11, 11, dtype=torch.float64)
    for g in group.grid_exact_elements():
        out = layer(transform_feature_map(y, group, g))
        assert _rel(out, transform_feature_map(layer(y), group, g)) < 1e-10


def test_group_conv_is_not_trivially_invariant():
    """Guard against a vacuous pass: the output really changes with the input transformation."""
    group = dihedral(4)
    layer = GroupConv2d(2, 2, group, 3, padding=1).double()
    y = torch.randn(1, 2 * 8, 9, 9, dtype=torch.float64)
    assert _rel(layer(transform_feature_map(y, group, 1)), layer(y)) > 0.1


@pytest.mark.parametrize("group", [dihedral(4), cyclic(8)], ids=lambda g: g.name)
def test_group_batchnorm_shares_statistics_over_the_group_axis(group):
    torch.manual_seed(0)
    bn = GroupBatchNorm2d(3, group.order).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    y = torch.randn(4, 3 * group.order, 6, 6, dtype=torch.float64) * 3 + 1
    for g in group.grid_exact_elements():
        bn.train()
        assert _rel(bn(transform_feature_map(y, group, g)), transform_feature_map(bn(y), group, g)) < 1e-10
    bn.eval()
    for g in group.grid_exact_elements():
        assert _rel(bn(transform_feature_map(y, group, g)), transform_feature_map(bn(y), group, g)) < 1e-10
    plain = bn.to_plain().double()
    assert torch.allclose(plain(y), bn(y), atol=1e-6)  # to_plain stores float32 statistics


@pytest.mark.parametrize("mode", ["max", "avg", "blur"])
@pytest.mark.parametrize("size", [(50, 50), (25, 25), (13, 12), (7, 8)])
def test_spatial_pool_is_equivariant_at_every_size(mode, size):
    group = dihedral(4)
    pool = EquivariantPool2d(mode)
    y = torch.randn(2, 3 * 8, *size, dtype=torch.float64)
    for g in range(8):
        assert _rel(pool(transform_feature_map(y, group, g)), transform_feature_map(pool(y), group, g)) < 1e-12
    plain = pool.to_plain(size[0], size[1], y.shape[1]).double()
    assert torch.allclose(plain(y), pool(y), atol=1e-12)


def test_plain_stride2_pool_is_not_exact_on_odd_sizes():
    """Why the parity-aware pool exists: 2×2/2 pooling on 25 px breaks flips."""
    y = torch.randn(1, 1, 25, 25, dtype=torch.float64)
    pool = torch.nn.MaxPool2d(2, 2)
    assert (pool(torch.flip(y, (-1,))) - torch.flip(pool(y), (-1,))).abs().max() > 0


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_group_pool_is_invariant(mode):
    group = dihedral(4)
    pool = GroupPool(8, mode)
    y = torch.randn(2, 5 * 8, 9, 9, dtype=torch.float64)
    for g in range(8):
        assert _rel(pool(transform_feature_map(y, group, g)), transform_image(pool(y), group, g)) < 1e-12


@pytest.mark.parametrize("cls", [LiftingConv2d, GroupConv2d])
def test_eval_cache_matches_fresh_filters_and_refreshes_after_a_step(cls):
    torch.manual_seed(0)
    group = dihedral(4)
    layer = cls(2, 3, group, 3, padding=1)
    x = torch.randn(2, 2 * (group.order if cls is GroupConv2d else 1), 8, 8)
    layer.eval()
    with torch.no_grad():
        first = layer(x)
        cached = layer._cache
        assert cached is not None and layer(x) is not None and layer._cache[1] is cached[1]  # reused
    layer.train()
    assert layer._cache is None
    assert torch.allclose(layer(x), first, atol=1e-6)  # train-mode (fresh) output = cached eval output

    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.eval()
    with torch.no_grad():
        before = layer(x)
    layer(x).square().mean().backward()  # grad enabled: no cache used
    opt.step()
    with torch.no_grad():
        after = layer(x)
        fresh, _ = layer.expand()
    assert not torch.allclose(after, before)
    assert torch.equal(layer._cache[1], fresh)


@pytest.mark.parametrize("cls", [LiftingConv2d, GroupConv2d])
def test_to_plain_conv_equals_layer(cls):
    group = cyclic(8)
    layer = cls(2, 3, group, 5, padding=2, method="steerable", bias=True).eval()
    x = torch.randn(2, 2 * (group.order if cls is GroupConv2d else 1), 10, 10)
    with torch.no_grad():
        assert torch.allclose(layer.to_plain()(x), layer(x), atol=1e-6)


@pytest.mark.parametrize("group,method", [(dihedral(4), "pixel"), (cyclic(8), "bilinear")])
@pytest.mark.parametrize("lifting", [True, False])
def test_factored_conv_rebuilds_the_bank_exactly(group, method: str, lifting: bool) -> None:
    """The export form (parameters × expansion) builds the layer's own filter bank: bit-identical for 0/1
    (pixel) expansions, to float rounding for interpolated ones; with a folded per-field affine map it equals
    scale · conv + shift."""
    torch.manual_seed(0)
    layer = LiftingConv2d(3, 4, group, 5, 2, method) if lifting else GroupConv2d(2, 3, group, 3, 1, method)
    factored = layer.to_factored()
    weight, bias = layer.expand()
    bank = factored.filter_bank()
    if method == "pixel":
        assert torch.equal(bank, weight)
    else:
        assert torch.allclose(bank, weight, atol=1e-6)
    x = torch.randn(2, layer.in_channels * layer.in_orientations, 11, 11)
    scale, shift = torch.rand(layer.out_channels) + 0.5, torch.randn(layer.out_channels)
    folded = layer.to_factored(scale, shift)
    n = group.order
    with torch.no_grad():
        expected = (layer(x) * scale.repeat_interleave(n)[None, :, None, None]
                    + shift.repeat_interleave(n)[None, :, None, None])
        assert torch.allclose(folded(x), expected, atol=1e-5)
    assert factored.weight.numel() == layer.weight.numel()
