"""The contract between `histoeq export` and `histoeq predict`: what an exported ONNX file says about itself.

An ONNX file must be usable on its own, on a server that never saw the training run, so everything `predict` needs
travels inside it as ONNX ``metadata_props``: one key ``histoeq`` holding a JSON document (the source of truth) plus a
few flat, human-readable keys (``histoeq.model``, ``histoeq.classes`` ...) that Netron or ``onnx`` show at a glance.

Normalisation decision: the graph takes **uint8 RGB tiles, NHWC** (``image``: batch x tile x tile x 3) and does the
uint8 -> float -> (x - mean) / std step itself, so a caller cannot get the normalisation wrong and feeds exactly what
a slide reader returns. The mean/std are nevertheless recorded in the metadata for provenance. Outputs are
``logits`` and ``probabilities`` (softmax over the classes, float32), both batch x classes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from histoeq.data.stain import check_stain
from histoeq.errors import HistoeqError, InputError
from histoeq.slide.budget import check_json_text
from histoeq.slide.context import KERNELS, NO_CONTEXT

METADATA_KEY = "histoeq"
FORMAT = "histoeq-onnx"
FORMAT_VERSION = 1
INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "probabilities")


CONTEXT_CHOICES = (NO_CONTEXT, *KERNELS)


@dataclass(frozen=True)
class OperatingPoint:
    """The decision threshold and spatial-context kernel chosen for this model (by cross-validation, see
    docs/protocol.md), so that `predict` applies them without the user having to know the numbers."""

    threshold: float  # positive-class probability at or above which a tile counts as positive, in (0, 1)
    context: str = NO_CONTEXT  # kernel name of histoeq.slide.context, or "none"
    chosen_by: str = ""  # how they were chosen, e.g. "pooled OOF balanced accuracy, 5-fold patient CV"

    def problem(self) -> str | None:
        """What makes this operating point unusable, or None; the same checks for export options and metadata."""
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or not 0 < t < 1:
            return f"threshold must be a number in (0, 1), got {t!r}"
        if not isinstance(self.context, str) or self.context not in CONTEXT_CHOICES:
            return f"unknown context kernel {self.context!r} (choose from {', '.join(CONTEXT_CHOICES)})"
        if not isinstance(self.chosen_by, str):
            return f"chosen_by must be text, got {self.chosen_by!r}"
        return None

    def describe(self) -> str:
        """One line for people: ``threshold 0.42, context binomial3 (chosen by ...)``."""
        how = f" (chosen by {self.chosen_by})" if self.chosen_by else ""
        return f"threshold {self.threshold:g}, context {self.context}{how}"


@dataclass(frozen=True)
class ModelMetadata:
    """Everything `predict` (and a human auditing a deployed model) needs to know about an exported model."""

    model_name: str
    model_config: dict[str, Any]
    group: dict[str, Any]  # {"name": "D4", "order": 8}
    classes: list[str]
    tile_px: int
    mpp: float  # micrometres per pixel of the tiles the model was trained on
    normalisation: dict[str, list[float]]  # mean/std in [0, 1] units, applied inside the graph
    precision: str = "fp32"  # fp32 or fp16 (weights and activations; input stays uint8, outputs float32)
    # Per-slide colour normalisation the caller applies before the graph (histoeq.data.stain), None for none:
    # {"method": "reinhard-lab" | "macenko" | "macenko-vectors", "per": "slide", "reference": {...}}
    stain: dict[str, Any] | None = None
    data_hash: str | None = None
    fraction_hash: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    histoeq_version: str = ""
    verification: dict[str, Any] = field(default_factory=dict)
    operating_point: OperatingPoint | None = None  # absent in models exported without one (and older models)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    input: dict[str, Any] = field(
        default_factory=lambda: {"name": INPUT_NAME, "layout": "NHWC", "dtype": "uint8", "normalised_in_graph": True}
    )
    outputs: list[str] = field(default_factory=lambda: list(OUTPUT_NAMES))

    @property
    def positive_class(self) -> str:
        """The class a heatmap shows: the last one (``1``/``idc``/``tumor`` in a binary model)."""
        return self.classes[-1]

    def to_props(self) -> dict[str, str]:
        """ONNX ``metadata_props``: the JSON document plus flat keys for people and generic tools."""
        doc = asdict(self)
        if self.operating_point is None:
            del doc["operating_point"]  # the document of a model without one stays as older versions wrote it
        flat = {} if self.operating_point is None else {"histoeq.operating_point": self.operating_point.describe()}
        return {
            METADATA_KEY: json.dumps(doc, sort_keys=True),
            "histoeq.model": self.model_name,
            "histoeq.group": str(self.group.get("name", "")),
            "histoeq.classes": ",".join(self.classes),
            "histoeq.tile_px": str(self.tile_px),
            "histoeq.mpp": repr(self.mpp),
            "histoeq.version": self.histoeq_version,
            **flat,
        }


# The document is a few kB (config, classes, metrics, verification figures); these bound what a foreign file can
# make the parser allocate or recurse through.
MAX_METADATA_BYTES = 4 << 20
MAX_METADATA_DEPTH = 32
_REQUIRED = ("model_name", "model_config", "group", "classes", "tile_px", "mpp", "normalisation")


def parse_metadata(props: Mapping[str, str], path: str | Path) -> ModelMetadata:
    """Read the metadata of an exported model; anything missing or malformed is an `InputError` naming the file."""
    raw = props.get(METADATA_KEY)
    if raw is None:
        raise InputError(path, "ONNX model has no histoeq metadata (export it with `histoeq export`)")
    if not isinstance(raw, str):
        raise InputError(path, "histoeq metadata is not text")
    check_json_text(path, raw.encode("utf-8", "surrogatepass"), "histoeq metadata", MAX_METADATA_BYTES,
                    MAX_METADATA_DEPTH)
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"histoeq metadata is not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(path, "histoeq metadata has the wrong format marker")
    version = doc.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(path, f"histoeq metadata has an unusable format_version ({version!r})")
    if version > FORMAT_VERSION:
        raise InputError(path, f"model format version {version} is newer than this histoeq")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise InputError(path, f"histoeq metadata lacks {', '.join(missing)}")
    known = {f for f in ModelMetadata.__dataclass_fields__}
    fields = {k: v for k, v in doc.items() if k in known}
    fields["operating_point"] = _parse_operating_point(doc.get("operating_point"), path)
    meta = ModelMetadata(**fields)
    if not isinstance(meta.classes, list) or not meta.classes or not all(isinstance(c, str) for c in meta.classes):
        raise InputError(path, "histoeq metadata has no class names")
    if isinstance(meta.tile_px, bool) or not isinstance(meta.tile_px, int) or meta.tile_px < 4:
        raise InputError(path, f"histoeq metadata has an unusable tile size ({meta.tile_px!r})")
    mpp_ok = isinstance(meta.mpp, int | float) and not isinstance(meta.mpp, bool) and math.isfinite(meta.mpp)
    if not (mpp_ok and meta.mpp > 0):
        raise InputError(path, f"histoeq metadata has an unusable µm/px ({meta.mpp!r})")
    if meta.stain is not None:
        try:
            check_stain(meta.stain)
        except HistoeqError as exc:
            raise InputError(path, f"histoeq metadata has an unusable stain normalisation ({exc})") from None
    return meta


def _parse_operating_point(raw: Any, path: str | Path) -> OperatingPoint | None:
    """The stored operating point, validated like the export options that made it; None when there is none."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "threshold" not in raw:
        raise InputError(path, "histoeq metadata has an unusable operating point (no threshold)")
    point = OperatingPoint(raw["threshold"], raw.get("context", NO_CONTEXT), raw.get("chosen_by", ""))
    problem = point.problem()
    if problem is not None:
        raise InputError(path, f"histoeq metadata has an unusable operating point ({problem})")
    return point
