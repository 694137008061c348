"""Turn a trained model into the ONNX graph that ships: uint8 NHWC tiles in, logits and probabilities out.

The model is first reduced to standard operators (`model.to_plain()`: Conv2d/BatchNorm2d/pooling/Linear), so the
file runs on any ONNX runtime without custom ops, then wrapped so that the uint8 -> normalised float step lives in
the graph (see `histoeq.export.metadata`). The batch axis is dynamic; the tile size is fixed, because the model's
invariance and receptive field are only guaranteed at the tile size it was trained on.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from histoeq.export.metadata import INPUT_NAME, OUTPUT_NAMES
from histoeq.nn.conv import FactoredConv2d


def plain_module(model: nn.Module, tile_px: int, factored: bool = True) -> nn.Module:
    """The standard-operator twin of `model` in eval mode (`to_plain(tile_px, factored=True)` when the model has
    one: pool windows depend on the tile size, so the twin is only valid at the size the graph is exported for,
    and group convolutions stay factored so the file stays near the parameter size)."""
    to_plain = getattr(model, "to_plain", None)
    plain = to_plain(tile_px, factored=factored) if callable(to_plain) else copy.deepcopy(model)
    return plain.eval()


class UInt8TileClassifier(nn.Module):
    """uint8 (B, H, W, 3) tiles -> (logits, softmax probabilities), normalising inside the graph."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.compute_dtype = dtype
        # mean/std are in [0, 1] units; folding the /255 into them saves one op per pixel.
        self.register_buffer("mean255", torch.tensor([float(m) * 255.0 for m in mean]).view(1, 3, 1, 1))
        self.register_buffer("std255", torch.tensor([float(s) * 255.0 for s in std]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (image.permute(0, 3, 1, 2).to(torch.float32) - self.mean255) / self.std255
        logits = self.model(x.to(self.compute_dtype)).to(torch.float32)
        return logits, torch.softmax(logits, dim=1)


def build_classifier(
    model: nn.Module, mean: Sequence[float], std: Sequence[float], tile_px: int, fp16: bool = False,
    factored: bool = True,
) -> UInt8TileClassifier:
    """The module that is exported: plain operators, normalisation in the graph, optionally fp16 weights
    (``factored=False``: expanded filter banks, for comparison, see tests/bench/bench_export_factored.py)."""
    plain = plain_module(model, tile_px, factored)
    share_identical_expansions(plain)
    if fp16:
        plain = copy.deepcopy(plain).half()
    return UInt8TileClassifier(plain, mean, std, torch.float16 if fp16 else torch.float32).eval()


def share_identical_expansions(module: nn.Module) -> int:
    """Point every `FactoredConv2d` whose expansion equals an earlier one at that tensor, so the exporter writes
    it once (all 3×3 group convs of a model, and of every member of an ensemble, share one). Returns how many
    were shared."""
    seen: list[torch.Tensor] = []
    shared = 0
    for layer in module.modules():
        if not isinstance(layer, FactoredConv2d):
            continue
        match = next((t for t in seen if t.shape == layer.expansion.shape and torch.equal(t, layer.expansion)), None)
        if match is None:
            seen.append(layer.expansion)
        else:
            layer.expansion = match
            shared += 1
    return shared


def export_graph(classifier: nn.Module, tile_px: int, path: Path, opset: int) -> None:
    """Write `classifier` as one self-contained ONNX file (weights inside, dynamic batch axis).

    Uses the default (dynamo) exporter with ``external_data=False`` so no ``.onnx.data`` side file appears. The
    exporter reports its steps on stdout and through warnings/logging; they are swallowed here because nothing
    below the CLI prints.
    """
    example = torch.zeros((2, tile_px, tile_px, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    sink = io.StringIO()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with (torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(sink),
              contextlib.redirect_stderr(sink)):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                classifier,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamic_shapes=({0: batch},),
                external_data=False,
                dynamo=True,
            )
    finally:
        exporter_log.setLevel(level)
