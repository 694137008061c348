"""Seed ensembles: mean probability, exact invariance in torch and in the exported ONNX graph, refusals, CLI."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from histoeq.errors import InputError
from histoeq.infer import OnnxTileModel
from histoeq.models.ensemble import ProbabilityEnsemble
from tests.conftest import run_cli

NORM = {"mean": [0.8, 0.6, 0.75], "std": [0.1, 0.15, 0.1]}
TILE = 50  # the production tile of the IDC models


def _member(name: str, seed: int, **kw) -> nn.Module:
    from histoeq import models

    torch.manual_seed(seed)
    model = models.create(name, width=4, **kw)
    for m in model.modules():  # non-trivial BatchNorm statistics, so to_plain's folding is exercised
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # confident, distinct members (a fresh head gives p ~ 0.5 for every tile)
        model.head.weight.normal_(0.0, 5.0)
        model.head.bias.normal_(0.0, 1.0)
    return model.eval()


def _save_run(folder, model: nn.Module, tile_px: int = TILE, **overrides) -> None:
    from histoeq.runs.checkpoint import save_checkpoint

    info = {"model_config": dict(model.config), "classes": ["non-idc", "idc"], "tile_px": tile_px, "mpp": 4.0,
            "normalisation": NORM, "data_hash": "d" * 16, "fraction_hash": "f" * 16,
            "metrics": {"val": {"auc": 0.9}}, "histoeq_version": "0.1.0", **overrides}
    save_checkpoint(folder / "best.pt", {**info, "state_dict": model.state_dict(), "epoch": 1})


def _d4_views(x: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(v, k, dims=(2, 3)) for v in (x, x.flip(3)) for k in range(4)]


def test_softmax_of_output_is_the_members_mean_probability() -> None:
    members = [_member("p4m", s) for s in (0, 1, 2)]
    ensemble = ProbabilityEnsemble(members).eval()
    x = torch.randn(5, 3, TILE, TILE)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        got = torch.softmax(ensemble(x), 1)
        assert torch.allclose(got, mean, atol=1e-6)
        assert not torch.allclose(got, torch.softmax(members[0](x), 1), atol=1e-2)  # members really differ
        plain = ensemble.to_plain(TILE)
        assert torch.allclose(torch.softmax(plain(x), 1), mean, atol=1e-5)
    assert ensemble.config["name"] == "p4m-ensemble3" and len(ensemble.config["members"]) == 3
    assert ensemble.group.name == "D4" and plain.group.name == "D4"


def test_p4m_ensemble_is_exactly_d4_invariant_in_torch() -> None:
    ensemble = ProbabilityEnsemble([_member("p4m", s) for s in (3, 4)]).eval()
    x = torch.randn(4, 3, TILE, TILE, dtype=torch.float64)
    ensemble = ensemble.double()
    with torch.no_grad():
        outs = [torch.softmax(ensemble(v), 1) for v in _d4_views(x)]
    assert max(float((o - outs[0]).abs().max()) for o in outs) < 1e-10


def test_members_of_different_groups_are_refused() -> None:
    with pytest.raises(ValueError, match="different groups"):
        ProbabilityEnsemble([_member("p4m", 0), _member("p4", 0)])
    with pytest.raises(ValueError, match="at least two"):
        ProbabilityEnsemble([_member("p4m", 0)])


@pytest.fixture(scope="module")
def ensemble_runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ensemble")
    members = [_member("p4m", s) for s in (5, 6)]
    runs = []
    for i, m in enumerate(members):
        (root / f"s{i}").mkdir()
        _save_run(root / f"s{i}", m)
        runs.append(root / f"s{i}")
    return root, runs, members


def test_exported_ensemble_is_the_mean_and_d4_invariant_in_onnxruntime(ensemble_runs, capsys) -> None:
    from histoeq.export.verify import torch_probabilities

    root, runs, members = ensemble_runs
    out = root / "ens.onnx"
    code, stdout, err = run_cli(["export", *runs, "--out", out], capsys)
    assert code == 0, err
    assert "p4m-ensemble2 on D4" in stdout
    model = OnnxTileModel(out, "cpu")
    meta = model.metadata
    assert meta.model_name == "p4m-ensemble2" and meta.group == {"name": "D4", "order": 8}
    assert meta.model_config["combine"] == "mean_probability" and len(meta.model_config["members"]) == 2
    assert [m["run"] for m in meta.metrics["members"]] == [str(r) for r in runs]
    assert meta.data_hash == "d" * 16 and meta.verification["passed"]
    assert meta.verification["invariance_group"] == "D4"

    rng = np.random.default_rng(0)
    tiles = np.clip(rng.normal(190, 30, size=(6, TILE, TILE, 3)), 0, 255).astype(np.uint8)
    base = model(tiles)
    mean = np.mean([torch_probabilities(m, tiles, NORM["mean"], NORM["std"])[1] for m in members], axis=0)
    assert np.abs(base - mean).max() <= 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for k in range(4):
        for mirror in (False, True):
            view = np.ascontiguousarray(np.rot90(tiles[:, :, ::-1] if mirror else tiles, k, axes=(1, 2)))
            assert np.abs(session.run(["probabilities"], {"image": view})[0] - base).max() <= 1e-5


@pytest.mark.parametrize("override,what", [({"tile_px": 48}, "tile_px"), ({"classes": ["a", "b"]}, "classes"),
                                           ({"normalisation": {"mean": [0.5] * 3, "std": [0.2] * 3}}, "normalisation")])
def test_cli_refuses_members_that_do_not_fit(ensemble_runs, tmp_path, capsys, override, what) -> None:
    _, runs, _ = ensemble_runs
    odd = tmp_path / "odd"
    odd.mkdir()
    _save_run(odd, _member("p4m", 7), **override)
    out = tmp_path / "ens.onnx"
    code, _, err = run_cli(["export", runs[0], odd, "--out", out], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and str(odd) in lines[0] and what in lines[0], err
    assert "Traceback" not in err and list(tmp_path.glob("*.onnx")) == []


def test_cli_refuses_members_of_different_groups(ensemble_runs, tmp_path, capsys) -> None:
    _, runs, _ = ensemble_runs
    other = tmp_path / "p4"
    other.mkdir()
    _save_run(other, _member("p4", 0))
    code, _, err = run_cli(["export", runs[0], other, "--out", tmp_path / "e.onnx"], capsys)
    assert code == 2 and "group differs" in err and str(other) in err


def test_export_at_a_tile_size_other_than_50(tmp_path) -> None:
    """The plain twin's pool windows follow the tile size: a 48 px model exports, verified and D4-invariant."""
    from histoeq.export.exporter import export_run

    member = _member("p4m", 8)
    _save_run(tmp_path, member, tile_px=48)
    result = export_run(tmp_path, tmp_path / "m48.onnx")
    assert result.verification.passed and result.metadata.tile_px == 48
    assert result.verification.invariance_max_abs <= 1e-5


def test_load_ensemble_refuses_bad_member(ensemble_runs, tmp_path) -> None:
    from histoeq.export.exporter import load_ensemble

    _, runs, _ = ensemble_runs
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(InputError, match="empty.pt"):
        load_ensemble([runs[0], tmp_path / "empty.pt"])
