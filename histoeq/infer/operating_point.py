"""Which region threshold and context kernel a predict run uses, and where each came from.

Why: the threshold and kernel chosen by cross-validation travel inside the exported model (its operating point,
`histoeq.export.metadata.OperatingPoint`), so ``histoeq predict slide.svs`` applies them without the user knowing
the numbers. An option the user gave wins; without one the model's value is used, and without that the fixed
default. Each value's source ("option", "model" or "default") goes into the run record, so a reader can tell a
chosen threshold from a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeVar

from histoeq.export.metadata import OperatingPoint
from histoeq.slide.context import NO_CONTEXT

DEFAULT_REGION_THRESHOLD = 0.5
DEFAULT_CONTEXT = NO_CONTEXT
OPTION, MODEL, DEFAULT = "option", "model", "default"

Options = TypeVar("Options")


@dataclass(frozen=True)
class ResolvedOperatingPoint:
    """The region threshold and context kernel in effect, and the source of each."""

    region_threshold: float
    context: str
    sources: dict[str, str]  # {"region_threshold": "option" | "model" | "default", "context": ...}
    chosen_by: str | None = None  # the model's note on how its operating point was chosen, when it has one

    def record(self) -> dict[str, Any]:
        """The ``operating_point`` entry of the JSON run record."""
        return {"region_threshold": self.region_threshold, "context": self.context, "sources": dict(self.sources),
                "chosen_by": self.chosen_by}


def resolve_operating_point(region_threshold: float | None, context: str | None,
                            model_point: OperatingPoint | None) -> ResolvedOperatingPoint:
    """Each value from the option when given (not None), else the model's operating point, else the default."""
    if region_threshold is not None:
        threshold, threshold_source = float(region_threshold), OPTION
    elif model_point is not None:
        threshold, threshold_source = float(model_point.threshold), MODEL
    else:
        threshold, threshold_source = DEFAULT_REGION_THRESHOLD, DEFAULT
    if context is not None:
        kernel, context_source = context, OPTION
    elif model_point is not None:
        kernel, context_source = model_point.context, MODEL
    else:
        kernel, context_source = DEFAULT_CONTEXT, DEFAULT
    return ResolvedOperatingPoint(threshold, kernel, {"region_threshold": threshold_source, "context": context_source},
                                  None if model_point is None else model_point.chosen_by)


def apply_operating_point(options: Options,
                          model_point: OperatingPoint | None) -> tuple[Options, ResolvedOperatingPoint]:
    """`options` (a `PredictOptions`, typed loosely to keep this module below `histoeq.infer.predict`) with its
    ``region_threshold`` and ``context`` resolved, and the resolution."""
    given: Any = options
    point = resolve_operating_point(given.region_threshold, given.context, model_point)
    return replace(given, region_threshold=point.region_threshold, context=point.context), point
