"""One record per predicted slide: how much tissue, how much of it the model calls positive, and the mean p.

Tissue area comes from the tissue mask (what was looked at), positive area from the positive tiles' cells (the same
cells `regions` merges, so the regions' areas add up to it). Records of several slides go into one CSV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from histoeq.atomic import write_atomically
from histoeq.errors import HistoeqError
from histoeq.infer.regions import cell_area_mm2
from histoeq.slide.tiler import TileGrid


@dataclass(frozen=True)
class SlideSummary:
    slide: str
    model: str
    positive_class: str
    threshold: float
    tiles: int
    tissue_area_mm2: float
    positive_tiles: int
    positive_area_mm2: float
    positive_fraction: float  # of the predicted tiles
    mean_p: float  # mean positive-class probability over the predicted tiles; NaN without tiles

    def record(self) -> dict[str, object]:
        return asdict(self)


def summarise_slide(slide: str, model: str, positive_class: str, grid: TileGrid, p: np.ndarray,
                    tissue_mask: np.ndarray, mask_downsample: float, mpp: float, threshold: float = 0.5
                    ) -> SlideSummary:
    """Summary of one slide from its predicted tiles' positive-class probabilities `p`, the thumbnail tissue mask
    (`histoeq.slide.tissue.tissue_mask`, made at `mask_downsample` level-0 px per pixel) and level-0 µm/px."""
    if not 0.0 < threshold <= 1.0:
        raise HistoeqError(f"summary threshold must be in (0, 1], got {threshold}")
    p = np.asarray(p, dtype=np.float64)
    positive = int((p >= threshold).sum())
    tissue_mm2 = float(np.count_nonzero(tissue_mask)) * (mask_downsample * mpp / 1000.0) ** 2
    return SlideSummary(slide=slide, model=model, positive_class=positive_class, threshold=threshold,
                        tiles=len(p), tissue_area_mm2=tissue_mm2, positive_tiles=positive,
                        positive_area_mm2=positive * cell_area_mm2(grid, mpp),
                        positive_fraction=positive / len(p) if len(p) else 0.0,
                        mean_p=float(p.mean()) if len(p) else float("nan"))


def write_summaries_csv(path: Path, summaries: Sequence[SlideSummary]) -> None:
    """One row per slide, columns in `SlideSummary` field order."""
    frame = pd.DataFrame([s.record() for s in summaries], columns=[f.name for f in fields(SlideSummary)])
    write_atomically(path, lambda fh: frame.to_csv(fh, index=False, float_format="%.6g", lineterminator="\n"))
