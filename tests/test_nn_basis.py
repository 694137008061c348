"""The steerable (se2) filter basis is the same on every machine, and legacy checkpoints keep their filters.

Before the Gram-Schmidt basis, the coefficients were orthonormalised with an SVD, whose singular vectors' signs are
up to the LAPACK build: se2 members trained on a GPU server scored validation AUC 0.92 there and 0.25 here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from histoeq import models
from histoeq.errors import InputError
from histoeq.nn import kernels
from histoeq.nn.conv import LiftingConv2d, migrate_legacy_steerable
from histoeq.nn.groups import cyclic
from histoeq.runs.checkpoint import KERNEL_BASIS, load_model, save_checkpoint, upgrade_kernel_basis
from tests.test_train_helpers import small_idc_fixture_path, small_threads


@pytest.fixture(scope="module")
def small_idc(idc_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    small_threads()
    return small_idc_fixture_path(idc_dir, tmp_path_factory)


@pytest.mark.parametrize("size", [3, 5, 7])
def test_basis_is_orthonormal_and_spans_the_harmonics(size: int) -> None:
    raw = kernels._steerable_basis(size, np.eye(2))
    basis = raw @ kernels.steerable_coefficients(size)
    assert np.allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-10)
    # Every raw column is inside the span (nothing of the harmonics is lost).
    assert np.allclose(basis @ (basis.T @ raw), raw, atol=1e-8)


def test_basis_does_not_depend_on_the_linear_algebra_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """A LAPACK build that returns other singular-vector signs must not change the filters."""
    group = cyclic(8)
    before = kernels.kernel_transforms(group, 5, "steerable")
    real_svd = np.linalg.svd

    def flipped_svd(a, *args, **kwargs):  # noqa: ANN001, ANN202 (numpy's signature)
        u, s, vt = real_svd(a, *args, **kwargs)
        signs = np.where(np.arange(len(s)) % 2 == 0, -1.0, 1.0)
        return u * signs, s, vt * signs[:, None]

    monkeypatch.setattr(np.linalg, "svd", flipped_svd)
    assert np.array_equal(kernels.kernel_transforms(group, 5, "steerable"), before)


@pytest.mark.parametrize("size", [3, 5])
def test_legacy_change_of_basis_keeps_the_filters(size: int) -> None:
    raw = kernels._steerable_basis(size, np.eye(2))
    u, s, vt = np.linalg.svd(raw, full_matrices=False)
    legacy = raw @ (vt.T / s)
    current = raw @ kernels.steerable_coefficients(size)
    change = kernels.legacy_steerable_change_of_basis(size)
    coeffs = np.random.default_rng(0).normal(size=(legacy.shape[1], 6))
    assert np.allclose(current @ (change @ coeffs), legacy @ coeffs, atol=1e-10)


def _legacy_model(monkeypatch: pytest.MonkeyPatch) -> torch.nn.Module:
    """An se2 model whose steerable layers are built on the legacy SVD basis (as before the fix)."""
    def legacy_coefficients(size: int) -> np.ndarray:
        raw = kernels._steerable_basis(size, np.eye(2))
        u, s, vt = np.linalg.svd(raw, full_matrices=False)
        return vt.T / s

    with monkeypatch.context() as patch:
        patch.setattr(kernels, "steerable_coefficients", legacy_coefficients)
        torch.manual_seed(0)
        return models.create("se2", width=4, orientations=8).eval()


def test_legacy_checkpoint_loads_with_the_same_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = _legacy_model(monkeypatch)
    with torch.no_grad():
        for module in legacy.modules():  # non-trivial BatchNorm statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    x = torch.rand(4, 3, 48, 48)
    with torch.no_grad():
        expected = legacy(x)
    payload = {"model_config": {"name": "se2", "width": 4, "orientations": 8, "num_classes": 2},
               "state_dict": legacy.state_dict(), "classes": ["a", "b"], "tile_px": 48,
               "normalisation": {"mean": [0.5] * 3, "std": [0.2] * 3}}  # no kernel_basis: a legacy file
    save_checkpoint(tmp_path / "best.pt", payload)
    loaded, _ = load_model(tmp_path)
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=1e-5)
        # Read as a current-basis file, the same weights make other filters (what the bug did).
        current = models.create("se2", width=4, orientations=8).eval()
        current.load_state_dict(legacy.state_dict())
        assert not torch.allclose(current(x), expected, atol=1e-3)
    # Rewritten in the current basis: same outputs, now without the legacy path; a second upgrade does nothing.
    assert upgrade_kernel_basis(tmp_path)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["kernel_basis"] == KERNEL_BASIS
    assert not upgrade_kernel_basis(tmp_path)
    upgraded, _ = load_model(tmp_path)
    with torch.no_grad():
        assert torch.allclose(upgraded(x), expected, atol=1e-5)


def test_migration_leaves_other_layers_alone() -> None:
    layer = LiftingConv2d(3, 2, cyclic(4), 3, method="pixel")
    state = {"weight": torch.randn_like(layer.weight)}
    assert torch.equal(migrate_legacy_steerable(layer, state)["weight"], state["weight"])


@pytest.mark.realdata
def test_trained_checkpoints_record_the_basis(tmp_path: Path, small_idc: Path) -> None:
    from histoeq.train.config import TrainConfig
    from histoeq.train.trainer import train

    out = tmp_path / "run"
    config = TrainConfig(data=small_idc, model="se2", out=out, width=4, epochs=1, max_steps=1, batch_size=16,
                         device="cpu")
    train(config)
    payload = torch.load(out / "best.pt", weights_only=True)
    assert payload["kernel_basis"] == KERNEL_BASIS
    # A legacy last.pt cannot be resumed (Adam's moments are in the old basis).
    last = torch.load(out / "last.pt", weights_only=True)
    del last["kernel_basis"]
    torch.save(last, out / "last.pt")
    with pytest.raises(InputError, match="legacy steerable basis"):
        train(dataclasses.replace(config, resume=True))
