"""Prove an exported file before it is written: ONNX Runtime must agree with PyTorch and keep the invariance.

Two checks, both in onnxruntime on the file's bytes (what ships, not the torch module):

* agreement: max |ORT - torch| over the class probabilities of real tiles, against the *original* model (so the
  `to_plain()` conversion is checked too), <= 1e-4 for fp32;
* invariance: every grid-exact element of the group the metadata names (`histoeq.nn.actions.exact_subgroup`: D4
  for p4m and a view-averaged model, C4 for p4 and se2 with N a multiple of 4, nothing for a CNN) gives the same
  probabilities as the untransformed tile in ORT, <= 1e-5 for fp32.

fp16 files get their own, looser tolerance (half precision has ~3 decimal digits): 1e-2 on probabilities for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from histoeq.nn.actions import exact_subgroup, transform_array
from histoeq.nn.groups import by_name

FP32_AGREEMENT = 1e-4
FP32_INVARIANCE = 1e-5
FP16_AGREEMENT = 1e-2
FP16_INVARIANCE = 1e-2


@dataclass
class Verification:
    """What was checked and how it came out; stored in the model's metadata."""

    patches: str
    agreement_max_abs: float
    agreement_logits_max_abs: float
    agreement_tolerance: float
    invariance_group: str | None
    invariance_max_abs: float | None
    invariance_tolerance: float
    onnxruntime_version: str = ort.__version__

    @property
    def passed(self) -> bool:
        ok = self.agreement_max_abs <= self.agreement_tolerance
        if self.invariance_max_abs is not None:
            ok = ok and self.invariance_max_abs <= self.invariance_tolerance
        return ok

    def failure(self) -> str:
        """One line saying which check failed, with the numbers."""
        parts = []
        if self.agreement_max_abs > self.agreement_tolerance:
            parts.append(f"ORT vs torch max |Δp| {self.agreement_max_abs:.2e} > {self.agreement_tolerance:.0e}")
        if self.invariance_max_abs is not None and self.invariance_max_abs > self.invariance_tolerance:
            parts.append(
                f"{self.invariance_group} invariance max |Δp| {self.invariance_max_abs:.2e} > "
                f"{self.invariance_tolerance:.0e}"
            )
        return "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


def exact_transforms(group_name: str | None) -> tuple[str | None, list[Callable[[np.ndarray], np.ndarray]]]:
    """The name of the exact subgroup of the group the metadata names, and its elements other than the identity as
    transforms of NHWC uint8 batches; (None, []) when there are none (C1, or a name that is no group)."""
    try:
        group = exact_subgroup(by_name(group_name or "C1"))
    except ValueError:
        return None, []
    transforms = [partial(transform_array, group=group, element=g) for g in range(1, group.order)]
    return (group.name if transforms else None), transforms


def torch_probabilities(model: nn.Module, tiles: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> tuple:
    """Reference (logits, probabilities) from the original float32 model on the same uint8 tiles."""
    x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model.eval().float()(x)
    return logits.numpy(), torch.softmax(logits, dim=1).numpy()


def verify_onnx(
    onnx_bytes: bytes,
    model: nn.Module,
    tiles: np.ndarray,
    patches_source: str,
    mean: Sequence[float],
    std: Sequence[float],
    group_name: str | None,
    fp16: bool,
) -> Verification:
    """Run both checks on the serialised model with ORT's CPU provider (deterministic and always present);
    `group_name` is the metadata's (``ModelMetadata.group["name"]``)."""
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, probs = session.run(None, {"image": np.ascontiguousarray(batch)})
        return logits, probs

    ort_logits, ort_probs = run(tiles)
    ref_logits, ref_probs = torch_probabilities(model, tiles, mean, std)
    group, transforms = exact_transforms(group_name)
    invariance = None
    if transforms:
        invariance = max(float(np.abs(run(t(tiles))[1] - ort_probs).max()) for t in transforms)
    return Verification(
        patches=patches_source,
        agreement_max_abs=float(np.abs(ort_probs - ref_probs).max()),
        agreement_logits_max_abs=float(np.abs(ort_logits - ref_logits).max()),
        agreement_tolerance=FP16_AGREEMENT if fp16 else FP32_AGREEMENT,
        invariance_group=group,
        invariance_max_abs=invariance,
        invariance_tolerance=FP16_INVARIANCE if fp16 else FP32_INVARIANCE,
    )
