"""One slide's prediction as a record: what every output writer takes, and what the JSON run record is made from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from histoeq.slide.tiler import TileGrid


@dataclass
class SlidePrediction:
    """The predicted tiles of one slide, with everything needed to write any output format from them.

    `indices` are flat (row-major) cells of `grid` in reading order, `probabilities` one row per tile, one column per
    class of `classes` (the last is the positive class). `outputs` names the outputs asked for in this run."""

    slide: Path
    dimensions: tuple[int, int]
    slide_mpp: float
    grid: TileGrid
    indices: np.ndarray
    probabilities: np.ndarray
    classes: list[str]
    positive_class: str
    thumbnail: np.ndarray
    thumbnail_downsample: float
    model: dict[str, Any]
    provider: str
    options: dict[str, Any]
    outputs: tuple[str, ...]
    stain: dict[str, Any] | None = None
    inference_s: float = 0.0
    tissue_mask: np.ndarray | None = None  # tissue mask (histoeq.slide.tissue), True = tissue
    tissue_downsample: float | None = None  # level-0 px per tissue mask pixel; None: the mask is the thumbnail's
    region_threshold: float = 0.5  # p at or above which a tile belongs to a tumour region and the positive area
    context: str = "none"  # spatial context kernel (histoeq.slide.context) or "none"
    context_scores: np.ndarray | None = None  # positive-class probability combined with the grid neighbours'
    no_tissue: str | None = None  # why no tile was kept (no tissue found, and the reason), None when some were
    slide_mpp_in_file: float | None = None  # the slide's own µm/px as read from the file (`slide_mpp` may override it)
    # Threshold and context in effect, and their sources (histoeq.infer.operating_point: option, model or default)
    operating_point: dict[str, Any] | None = None

    @property
    def scores(self) -> np.ndarray:
        """The positive-class values a reader should look at: with context when there is one, else the model's."""
        return self.probabilities[:, -1] if self.context_scores is None else self.context_scores

    @property
    def context_column(self) -> str:
        """Name of the combined probability in tables: ``prob_<positive class>_<kernel>``."""
        return f"prob_{self.positive_class}_{self.context}"

    @property
    def mask_downsample(self) -> float:
        """Level-0 px per pixel of `tissue_mask` (made on its own image, finer than the heatmap's thumbnail)."""
        return self.thumbnail_downsample if self.tissue_downsample is None else self.tissue_downsample

    @property
    def tile_count(self) -> int:
        return int(len(self.indices))

    @property
    def top_left(self) -> tuple[np.ndarray, np.ndarray]:
        """Integer level-0 top-left corners of the predicted tiles."""
        return self.grid.top_left_of(self.indices)

    @property
    def tile_size(self) -> int:
        """Level-0 side of a tile, rounded to whole pixels."""
        return int(round(self.grid.footprint))

    def record(self, files: dict[str, str], total_s: float, **extra: Any) -> dict[str, Any]:
        """The JSON run record: slide, model, grid, options, timing and the output files (`files`: name -> file)."""
        infer_s = self.inference_s
        return {
            "slide": str(self.slide),
            "slide_dimensions": list(self.dimensions),
            "slide_mpp": float(self.slide_mpp),
            "slide_mpp_in_file": None if self.slide_mpp_in_file is None else float(self.slide_mpp_in_file),
            "model": self.model,
            "stain": self.stain,
            "provider": self.provider,
            "grid": asdict(self.grid),
            "options": self.options,
            "tile_count": self.tile_count,
            "grid_tiles": self.grid.count,
            "no_tissue": self.no_tissue,
            "timing": {"inference_s": round(infer_s, 3), "total_s": round(total_s, 3),
                       "tiles_per_s": round(self.tile_count / infer_s, 1) if infer_s else None},
            "outputs": files,
            "context": {"kernel": self.context, "column": self.context_column if self.context_scores is not None
                        else None, "heatmap": "with context" if self.context_scores is not None else "tile only"},
            "operating_point": self.operating_point,
            **extra,
        }
