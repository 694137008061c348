"""Export: ONNX round trip, metadata, ORT vs torch agreement, invariance in ORT, fp16, refusal, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from histoeq.errors import InputError
from histoeq.export.exporter import export_model
from histoeq.export.metadata import parse_metadata
from histoeq.infer import OnnxTileModel
from tests.conftest import run_cli

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
NORM = {"mean": [0.8, 0.6, 0.75], "std": [0.1, 0.15, 0.1]}


def _info(model: nn.Module) -> dict:
    return {
        "model_config": dict(model.config), "classes": ["non-idc", "idc"], "tile_px": 50, "mpp": 4.0,
        "normalisation": NORM, "data_hash": "d" * 16, "fraction_hash": "f" * 16,
        "metrics": {"val": {"auc": 0.9}, "test": {"auc": 0.88}}, "histoeq_version": "0.1.0",
    }


@pytest.fixture(scope="module")
def p4m_model() -> nn.Module:
    from histoeq import models

    torch.manual_seed(0)
    model = models.create("p4m", width=8)
    # Non-trivial BatchNorm statistics, so to_plain's folding is really exercised.
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def p4m_onnx(p4m_model: nn.Module, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("export") / "p4m.onnx"
    return export_model(p4m_model, _info(p4m_model), out)


def test_single_file_dynamic_batch_and_metadata(p4m_onnx) -> None:
    path = p4m_onnx.path
    assert path.is_file() and not path.with_name(path.name + ".data").exists()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"Transpose", "Cast", "Sub", "Div", "Conv", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
                   "Gemm", "MatMul", "Add", "Softmax", "Reshape", "Flatten", "BatchNormalization", "Mul",
                   "ReduceMean", "ReduceMax", "Concat", "Constant", "Identity", "Squeeze", "Unsqueeze", "Shape",
                   "Gather", "Pad", "Slice", "Max", "Min", "Clip"}, ops
    (inp,) = proto.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [50, 50, 3]
    props = {p.key: p.value for p in proto.metadata_props}
    meta = parse_metadata(props, path)
    assert meta.model_name == "p4m" and meta.group == {"name": "D4", "order": 8}
    assert meta.classes == ["non-idc", "idc"] and meta.tile_px == 50 and meta.mpp == 4.0
    assert meta.normalisation == NORM and meta.data_hash == "d" * 16 and meta.metrics["test"]["auc"] == 0.88
    assert meta.verification["passed"] and meta.verification["invariance_group"] == "D4"
    assert props["histoeq.classes"] == "non-idc,idc"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # dynamic batch axis
        logits, probs = session.run(None, {"image": np.zeros((batch, 50, 50, 3), np.uint8)})
        assert logits.shape == probs.shape == (batch, 2)


def test_group_convs_are_stored_factored_and_their_expansion_once(p4m_onnx, p4m_model) -> None:
    """The file holds the free parameters and one shared expansion, not the |G|-fold expanded filter banks."""
    proto = onnx.load(str(p4m_onnx.path))
    stored = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    expanded = sum(m.weight.numel() for m in p4m_model.to_plain(50).modules() if isinstance(m, nn.Conv2d))
    assert stored < expanded / 2, (stored, expanded)
    expansions = [t for t in proto.graph.initializer if t.name.endswith("expansion")]
    assert len(expansions) == 1 and list(expansions[0].dims) == [72, 576]  # D4, 3×3: (8·9, 8·8·9)


def test_ort_matches_torch_and_is_d4_invariant(p4m_onnx, p4m_model, shared_data) -> None:
    from histoeq.export.check_patches import idc_patches
    from histoeq.export.verify import torch_probabilities

    v = p4m_onnx.verification
    assert v.patches.startswith("idc val patches")
    assert v.agreement_max_abs <= 1e-4 and v.invariance_max_abs <= 1e-5
    # Independently of the exporter's own check: D4 views of real patches through the shipped file.
    tiles = idc_patches(50, 16)
    model = OnnxTileModel(p4m_onnx.path, "cpu")
    base = model(tiles)
    _, ref = torch_probabilities(p4m_model, tiles, NORM["mean"], NORM["std"])
    assert np.abs(base - ref).max() <= 1e-4
    for k in range(4):
        for mirror in (False, True):
            view = np.rot90(tiles[:, :, ::-1] if mirror else tiles, k, axes=(1, 2))
            assert np.abs(model(np.ascontiguousarray(view)) - base).max() <= 1e-5


def test_fp16_has_its_own_tolerance(p4m_model, tmp_path) -> None:
    result = export_model(p4m_model, _info(p4m_model), tmp_path / "p4m16.onnx", fp16=True)
    assert result.metadata.precision == "fp16" and result.verification.agreement_tolerance == 1e-2
    assert result.verification.passed and result.verification.invariance_max_abs <= 1e-2
    assert OnnxTileModel(result.path, "cpu")(np.full((2, 50, 50, 3), 200, np.uint8)).shape == (2, 2)


class _BrokenPlain(nn.Module):
    """A model whose plain twin does not compute the same thing: export must refuse it."""

    config = {"name": "broken"}

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def to_plain(self, tile_px: int = 50, **_: object) -> nn.Module:
        twin = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
        with torch.no_grad():
            twin[2].weight.copy_(self.head[2].weight)
            twin[2].weight[0] += 0.5  # shifts one class only, so the probabilities change
            twin[2].bias.copy_(self.head[2].bias)
        return twin


def test_refuses_a_model_that_fails_verification(tmp_path) -> None:
    out = tmp_path / "broken.onnx"
    with pytest.raises(InputError, match="fails verification"):
        export_model(_BrokenPlain().eval(), _info(_BrokenPlain()), out)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_cli_export_from_checkpoint(tmp_path, capsys) -> None:
    from histoeq import models
    from histoeq.runs.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model = models.create("cnn", width=8).eval()
    save_checkpoint(tmp_path / "run" / "best.pt", {**_info(model), "state_dict": model.state_dict(), "epoch": 1})
    code, out, err = run_cli(["export", tmp_path / "run", "--out", tmp_path / "m.onnx"], capsys)
    assert code == 0, err
    assert "wrote" in out and "ORT vs torch" in out
    meta = OnnxTileModel(tmp_path / "m.onnx", "cpu").metadata
    assert meta.model_config == model.config and json.loads(json.dumps(meta.metrics))["val"]["auc"] == 0.9


def test_cli_export_bad_run(tmp_path, capsys) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    code, out, err = run_cli(["export", tmp_path / "empty.pt", "--out", tmp_path / "m.onnx"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_eval_loads_onnx_through_the_loader_table(p4m_onnx) -> None:
    """`histoeq eval model.onnx` finds the ONNX Runtime loader in the table of model files by its suffix."""
    from histoeq.evaluate.predictors import load_predictor
    from histoeq.lab.model_files import PREDICTOR_LOADERS

    predictor = load_predictor(p4m_onnx.path, torch.device("cpu"), PREDICTOR_LOADERS)
    assert predictor.tile_px == 50 and predictor.info["provider"] == "CPUExecutionProvider"
    tiles = np.random.default_rng(0).integers(0, 256, (5, 50, 50, 3), dtype=np.uint8)
    probs = predictor.predict(tiles)
    assert probs.shape == (5, 2) and np.allclose(probs, OnnxTileModel(p4m_onnx.path, "cpu")(tiles))


@pytest.mark.parametrize("name,kw", [("p4", {}), ("se2", {"orientations": 8}), ("se2", {"orientations": 16})])
def test_rotation_models_stay_c4_invariant_in_onnx(name, kw, tmp_path) -> None:
    """Every G-CNN model keeps its exact (90°) invariance in the exported graph at the 50 px production tile."""
    from histoeq import models

    torch.manual_seed(0)
    model = models.create(name, width=8, **kw).eval()
    exported = export_model(model, _info(model), tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])

    def logits(batch: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"image": np.ascontiguousarray(batch)})[0]

    rng = np.random.default_rng(0)
    tiles = np.clip(rng.normal(190, 25, size=(6, 50, 50, 3)), 0, 255).astype(np.uint8)
    base = logits(tiles)
    scale = max(np.abs(base).max(), 1.0)
    rotated = max(np.abs(logits(np.rot90(tiles, k, axes=(1, 2))) - base).max() for k in (1, 2, 3))
    mirrored = np.abs(logits(tiles[:, :, ::-1]) - base).max()
    assert rotated <= 1e-5 * scale
    assert mirrored > 100 * max(rotated, 1e-6)  # C_N has no mirrors: the check above is not vacuous


@pytest.mark.parametrize("name", [p.name for p in sorted(MODELS_DIR.glob("idc-*.onnx"))] or ["(none shipped)"])
def test_shipped_model_is_d4_invariant_on_real_patches(shared_data, name: str) -> None:
    """Every model in models/ (the first is the default of `histoeq predict`) on real IDC patches in onnxruntime."""
    from histoeq.export.check_patches import idc_patches

    assert (MODELS_DIR / name).is_file(), "models/ must ship a model: `histoeq predict` has no default without one"
    model = OnnxTileModel(MODELS_DIR / name, "cpu")
    assert model.metadata.group["name"].startswith("D")  # a shipped model claims the mirrors too
    tiles = idc_patches(50, 32)
    base = model(tiles)
    assert base.shape == (32, 2) and np.allclose(base.sum(1), 1.0, atol=1e-5)
    for k in range(4):
        for mirror in (False, True):
            view = np.rot90(tiles[:, :, ::-1] if mirror else tiles, k, axes=(1, 2))
            assert np.abs(model(np.ascontiguousarray(view)) - base).max() <= 1e-5


def test_cli_export_stores_test_metrics_from_eval(idc_dir, tmp_path, tmp_path_factory, capsys) -> None:
    """`histoeq eval` on held-out data, then `histoeq export --test-metrics` puts those figures in the metadata."""
    from histoeq import models
    from histoeq.runs.checkpoint import save_checkpoint
    from tests.test_train_helpers import small_idc_fixture_path

    data = small_idc_fixture_path(idc_dir, tmp_path_factory)  # a few hundred real IDC patches with splits
    torch.manual_seed(2)
    model = models.create("cnn", width=8).eval()
    save_checkpoint(tmp_path / "run" / "best.pt", {**_info(model), "state_dict": model.state_dict(), "epoch": 1})
    code, _, err = run_cli(["eval", tmp_path / "run", "--data", data, "--split", "test", "--rotations", "4",
                            "--out", tmp_path / "eval"], capsys)
    assert code == 0, err
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())["runs"][0]["views"][0]
    code, _, err = run_cli(["export", tmp_path / "run", "--out", tmp_path / "m.onnx",
                            "--test-metrics", tmp_path / "eval" / "eval.json"], capsys)
    assert code == 0, err
    test = OnnxTileModel(tmp_path / "m.onnx", "cpu").metadata.metrics["test"]
    assert test["auc"] == evaluated["auc"] and test["split"] == "test" and test["rotations"] == 4
    assert set(test["mean_over_angles"]) == {"auc", "accuracy", "balanced_accuracy", "f1"}

    (tmp_path / "bad.json").write_text("{}")
    code, _, err = run_cli(["export", tmp_path / "run", "--out", tmp_path / "m2.onnx",
                            "--test-metrics", tmp_path / "bad.json"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "bad.json" in lines[0] and not (tmp_path / "m2.onnx").exists()
