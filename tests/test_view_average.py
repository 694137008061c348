"""View averaging (`histoeq export --invariant-to d4`): coset arithmetic, exact D4 invariance at the production
tile in torch and in the exported ONNX graph, the mean-probability identity, and the CLI's refusal."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from histoeq.infer import OnnxTileModel
from histoeq.models.view_average import D4, ViewAveraged, averaged_group, make_invariant, missing_views
from histoeq.nn.actions import transform_image
from histoeq.nn.groups import by_name
from tests.conftest import run_cli
from tests.test_ensemble import NORM, TILE, _d4_views, _member, _save_run


@pytest.mark.parametrize("name,n_views", [("C1", 8), ("C2", 4), ("C4", 2), ("C8", 2), ("C16", 2), ("D4", 1),
                                          ("D8", 1), ("C3", 8), ("D2", 2)])
def test_views_are_one_per_right_coset_of_the_models_share_of_d4(name: str, n_views: int) -> None:
    group = by_name(name)
    views = missing_views(group)
    assert len(views) == n_views and views[0] == 0
    inside = [h for h in range(D4.order) if any(
        np.allclose(group.plane_matrix(g), D4.plane_matrix(h)) for g in range(group.order))]
    cosets = [sorted(int(D4.cayley[h, r]) for h in inside) for r in views]
    assert sorted(e for c in cosets for e in c) == list(range(D4.order))  # disjoint and covering


def test_averaged_group_joins_d4_with_the_models_rotations() -> None:
    assert averaged_group(by_name("C8")).name == "D8"
    assert averaged_group(by_name("C1")).name == "D4"
    assert averaged_group(by_name("C4")).name == "D4"


def _max_d4_change(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        outs = [torch.log_softmax(model(v), 1) for v in _d4_views(x)]  # log: saturated probabilities hide changes
    return max(float((o - outs[0]).abs().max()) for o in outs)


@pytest.mark.parametrize("name,kw", [("se2", {"orientations": 8}), ("p4", {}), ("cnn", {})])
def test_averaged_model_is_exactly_d4_invariant_in_torch_at_the_production_tile(name: str, kw: dict) -> None:
    model = _member(name, 0, **kw).double()
    x = torch.randn(4, 3, TILE, TILE, dtype=torch.float64)
    assert _max_d4_change(model, x) > 1e-4  # the mirror (and for the CNN the rotations) do move the bare model
    averaged = make_invariant(model, "d4")
    assert isinstance(averaged, ViewAveraged)
    assert _max_d4_change(averaged, x) < 1e-10
    plain = averaged.to_plain(TILE)
    assert _max_d4_change(plain.double(), x) < 1e-10


def test_softmax_of_output_is_the_mean_probability_over_the_views() -> None:
    model = _member("se2", 1, orientations=8)
    averaged = make_invariant(model, "d4")
    x = torch.randn(3, 3, TILE, TILE)
    with torch.no_grad():
        mean = torch.stack([torch.softmax(model(transform_image(x, D4, g)), 1) for g in averaged.views]).mean(0)
        assert torch.allclose(torch.softmax(averaged(x), 1), mean, atol=1e-6)
    assert averaged.config["name"] == "se2-viewavg2" and averaged.config["invariant_to"] == "D8"


def test_p4m_is_returned_unchanged_and_unknown_targets_refused() -> None:
    model = _member("p4m", 2)
    assert make_invariant(model, "d4") is model
    with pytest.raises(ValueError, match="unknown invariance target"):
        make_invariant(model, "c9")
    with pytest.raises(ValueError, match="square"):
        make_invariant(_member("cnn", 0), "d4")(torch.randn(1, 3, TILE, TILE + 2))


@pytest.mark.parametrize("name,kw,group", [("se2", {"orientations": 8}, "D8"), ("cnn", {}, "D4")])
def test_exported_average_is_d4_invariant_in_onnxruntime(tmp_path, capsys, name, kw, group) -> None:
    from histoeq.export.verify import torch_probabilities

    model = _member(name, 3, **kw)
    _save_run(tmp_path, model)
    out = tmp_path / "avg.onnx"
    code, stdout, err = run_cli(["export", tmp_path, "--invariant-to", "d4", "--out", out], capsys)
    assert code == 0, err
    meta = OnnxTileModel(out, "cpu").metadata
    assert meta.group["name"] == group and meta.verification["invariance_group"] == "D4"
    assert meta.model_config["inner"]["name"] == name

    rng = np.random.default_rng(1)
    tiles = np.clip(rng.normal(190, 30, size=(6, TILE, TILE, 3)), 0, 255).astype(np.uint8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    # Logits (the log of the mean probability): random heads saturate the probabilities, which would hide changes.
    base = session.run(["logits"], {"image": tiles})[0]
    bare = torch_probabilities(model, tiles, NORM["mean"], NORM["std"])[0]
    bare_mirrored = torch_probabilities(model, np.ascontiguousarray(tiles[:, :, ::-1]), NORM["mean"], NORM["std"])[0]
    assert np.abs(bare_mirrored - bare).max() > 1e-3 * np.abs(bare).max()  # the bare model is not invariant
    for k in range(4):
        for mirror in (False, True):
            view = np.ascontiguousarray(np.rot90(tiles[:, :, ::-1] if mirror else tiles, k, axes=(1, 2)))
            assert np.abs(session.run(["logits"], {"image": view})[0] - base).max() <= 1e-5 * max(1, np.abs(base).max())


def test_cli_refuses_an_unknown_target_in_one_line(tmp_path, capsys) -> None:
    _save_run(tmp_path, _member("se2", 4, orientations=8))
    code, _, err = run_cli(["export", tmp_path, "--invariant-to", "c9", "--out", tmp_path / "m.onnx"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "c9" in lines[0] and "Traceback" not in err
    assert list(tmp_path.glob("*.onnx")) == []
