"""`histoeq predict`: classify the tissue tiles of whole slides with an exported ONNX model.

Per slide: open it, lay the centred tile grid at the model's µm/px (`grid`), keep tiles on the tissue mask of the
thumbnail, read them in a thread pool while the model runs (`reader`), and write the four result files atomically,
as one set (`outputs`, `heatmap`). One ONNX Runtime session serves all slides of the process. Slides whose results
are already complete are skipped, so an interrupted or sharded job can simply be run again. Everything that can be
checked without running the model (options, output folder, every slide and its µm/px) is checked first.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from histoeq import __version__
from histoeq.atomic import atomic_paths, check_output_dir
from histoeq.data.stain import StainTransform, sample_evenly
from histoeq.errors import HistoeqError, InputError
from histoeq.infer.grid import TileGrid, tile_grid, tile_rects
from histoeq.infer.heatmap import probability_grid, write_heatmap_png
from histoeq.infer.onnx_model import OnnxTileModel
from histoeq.infer.outputs import (
    SUFFIXES, is_complete, output_paths, write_run_json, write_tiles_csv, write_tiles_geojson,
)
from histoeq.infer.reader import iter_batches
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide import open_slide
from histoeq.slide.tissue import tissue_fraction, tissue_mask

THUMBNAIL_PX = 1024  # tissue mask and heatmap background; 50 px tiles of a 32k slide are still 1.6 px here
STAIN_SAMPLE_TILES = 2048  # tiles read (evenly spread) to measure a slide's colour for a stain-normalised model


@dataclass
class PredictOptions:
    batch_size: int = 256
    stride_px: int | None = None  # model pixels between tiles; default: the tile size (no overlap)
    mpp: float | None = None  # override the slide's µm/px
    tissue_threshold: float = 0.25  # minimum tissue fraction of a tile; 0 keeps every tile
    block: int = 8  # tiles per side of one region read
    workers: int = max(2, min(8, os.cpu_count() or 2))


@dataclass
class SlideResult:
    slide: str
    skipped: bool
    tiles: int = 0
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds else 0.0


def default_model_path(search: Sequence[Path] | None = None) -> Path:
    """The shipped model: the first ``*.onnx`` in ``$HISTOEQ_MODEL_DIR`` (the Docker image sets it), ``./models``
    or the project checkout's ``models/``."""
    if search is not None:
        folders = list(search)
    else:
        folders = [Path.cwd() / "models", Path(__file__).resolve().parents[2] / "models"]
        if os.environ.get("HISTOEQ_MODEL_DIR"):
            folders.insert(0, Path(os.environ["HISTOEQ_MODEL_DIR"]))
    for folder in folders:
        found = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
        if found:
            return found[0]
    where = ", ".join(str(f) for f in folders)
    raise HistoeqError(f"no model given and no *.onnx found (looked in {where}); pass --model model.onnx")


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n); None -> (0, 1)."""
    if not shard:
        return 0, 1
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise HistoeqError(f"--shard must look like i/n, e.g. 0/4 (got {shard!r})") from None
    if n < 1 or not 0 <= i < n:
        raise HistoeqError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def shard_slides(slides: Sequence[Path], shard: str | None) -> list[Path]:
    """This shard's slides: every n-th of the sorted, de-duplicated list, from the i-th (stable across machines)."""
    i, n = parse_shard(shard)
    ordered = sorted({Path(s) for s in slides}, key=lambda p: str(p))
    return ordered[i::n]


def select_tiles(slide: Any, model: OnnxTileModel, options: PredictOptions) -> tuple[TileGrid, np.ndarray, np.ndarray, float]:
    """(grid, keep mask (rows, cols), thumbnail, thumbnail downsample) for one slide."""
    meta = model.metadata
    grid = tile_grid(slide.dimensions, float(slide.mpp), meta.mpp, meta.tile_px, options.stride_px, slide.path)
    thumb, downsample = slide.thumbnail(THUMBNAIL_PX)
    thumb = np.asarray(thumb)[..., :3]
    if options.tissue_threshold <= 0:
        keep = np.ones((grid.rows, grid.cols), dtype=bool)
    else:
        fraction = tissue_fraction(tissue_mask(thumb), float(downsample), tile_rects(grid))
        keep = fraction.reshape(grid.rows, grid.cols) >= options.tissue_threshold
    return grid, keep, thumb, float(downsample)


def slide_stain_transform(slide: Any, grid: TileGrid, keep: np.ndarray, model: OnnxTileModel,
                          options: PredictOptions) -> StainTransform | None:
    """For a model trained on stain-normalised patches (metadata ``stain``): the slide's colour statistics, from up
    to `STAIN_SAMPLE_TILES` of its kept tiles spread over the whole slide, and the map to the model's reference.
    None for a model without stain normalisation."""
    stain = model.metadata.stain
    if stain is None:
        return None
    kept = np.flatnonzero(keep.ravel())
    sample = np.zeros(keep.size, dtype=bool)
    sample[kept[sample_evenly(len(kept), STAIN_SAMPLE_TILES)]] = True
    batches = iter_batches(slide, grid, sample.reshape(keep.shape), model.metadata.mpp, options.batch_size,
                           options.block, options.workers)
    return StainTransform.measure(stain, (tiles for _, tiles in batches))


def run_tiles(
    slide: Any, grid: TileGrid, keep: np.ndarray, model: OnnxTileModel, options: PredictOptions,
    progress: ProgressFn = null_progress, task: str = "predict", transform: StainTransform | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(flat grid indices, probabilities) of the kept tiles, in reading order; `transform` (the slide's stain
    normalisation) is applied to every batch before the model."""
    total = int(keep.sum())
    indices = np.empty(total, dtype=np.int64)
    probs = np.empty((total, len(model.classes)), dtype=np.float32)
    done, start = 0, time.perf_counter()
    for idx, tiles in iter_batches(
        slide, grid, keep, model.metadata.mpp, options.batch_size, options.block, options.workers
    ):
        n = len(idx)
        indices[done : done + n] = idx
        probs[done : done + n] = model(tiles if transform is None else transform(tiles))
        done += n
        rate = done / max(time.perf_counter() - start, 1e-9)
        progress(task, done, total, f"{rate:,.0f} tiles/s")
    return indices[:done], probs[:done]


def predict_slide(
    path: Path, model: OnnxTileModel, out_dir: Path, options: PredictOptions, progress: ProgressFn = null_progress
) -> SlideResult:
    """Predict one slide and write its four outputs; returns what was done."""
    start = time.perf_counter()
    slide = open_slide(path, options.mpp, mpp_option="--slide-mpp")
    grid, keep, thumb, downsample = select_tiles(slide, model, options)
    transform = slide_stain_transform(slide, grid, keep, model, options)
    indices, probs = run_tiles(slide, grid, keep, model, options, progress, task=path.name, transform=transform)
    infer_s = time.perf_counter() - start
    rows, cols = np.divmod(indices, grid.cols)
    x, y = grid.top_left(rows, cols)
    size = int(round(grid.footprint))
    classes = model.classes
    paths = output_paths(out_dir, path.stem)
    outputs = {k.lstrip("."): p.name for k, p in paths.items() if k != ".json"}
    meta = model.metadata
    # All four files or none: the .json, renamed last, marks the slide complete.
    with atomic_paths([paths[suffix] for suffix in SUFFIXES]) as (csv, geojson, png, record_json):
        write_tiles_csv(csv, x, y, size, probs, classes)
        write_tiles_geojson(geojson, x, y, size, probs, classes)
        heat = probability_grid(grid, indices, probs[:, -1])
        write_heatmap_png(png, thumb, downsample, grid, heat, meta.positive_class)
        seconds = time.perf_counter() - start
        record = {
            "slide": str(path),
            "slide_dimensions": list(slide.dimensions),
            "slide_mpp": float(slide.mpp),
            "model": {
                "path": str(model.path), "name": meta.model_name, "group": meta.group, "classes": classes,
                "tile_px": meta.tile_px, "mpp": meta.mpp, "precision": meta.precision, "data_hash": meta.data_hash,
                "metrics": meta.metrics, "histoeq_version": meta.histoeq_version,
            },
            "stain": None if transform is None else transform.record(),
            "provider": model.provider,
            "grid": {k: v for k, v in asdict(grid).items()},
            "options": asdict(options),
            "tile_count": int(len(indices)),
            "grid_tiles": grid.count,
            "timing": {"inference_s": round(infer_s, 3), "total_s": round(seconds, 3),
                       "tiles_per_s": round(len(indices) / infer_s, 1) if infer_s else None},
            "outputs": outputs,
            "histoeq_version": __version__,
            "host": socket.gethostname(),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_run_json(record_json, record)
    return SlideResult(str(path), False, int(len(indices)), seconds, {**outputs, "json": paths[".json"].name})


def predict_slides(
    slides: Sequence[str | Path],
    model: str | Path | OnnxTileModel | None,
    out_dir: str | Path,
    *,
    device: str = "auto",
    options: PredictOptions | None = None,
    shard: str | None = None,
    progress: ProgressFn = null_progress,
) -> tuple[OnnxTileModel, list[SlideResult]]:
    """Predict this shard's slides with one ONNX Runtime session; returns (model with its provider, results)."""
    options = options or PredictOptions()
    check_options(options)
    out = check_output_dir(out_dir)
    check_distinct_stems([Path(s) for s in slides])
    mine = shard_slides([Path(s) for s in slides], shard)
    # Fail fast: every problem found here would otherwise surface only after hours of work on earlier slides.
    geometry = {path: _check_slide(path, out, options) for path in mine}
    if not isinstance(model, OnnxTileModel):
        model = OnnxTileModel(model if model is not None else default_model_path(), device)
    meta = model.metadata
    for path, (dimensions, mpp) in geometry.items():
        tile_grid(dimensions, mpp, meta.mpp, meta.tile_px, options.stride_px, path)
    results = []
    for path in mine:
        if is_complete(out, path.stem):
            results.append(SlideResult(str(path), True))
            continue
        results.append(predict_slide(path, model, out, options, progress))
    return model, results


def check_options(options: PredictOptions) -> None:
    """Reject option values that would crash deep inside a run or silently mean something else (0 workers)."""
    if options.batch_size < 1:
        raise HistoeqError("--batch-size must be at least 1")
    if not 0 <= options.tissue_threshold <= 1:
        raise HistoeqError("--min-tissue must be between 0 and 1")
    if options.stride_px is not None and options.stride_px < 1:
        raise HistoeqError(f"--stride must be at least 1 model pixel (got {options.stride_px})")
    if options.workers < 1:
        raise HistoeqError(f"--workers must be at least 1 (got {options.workers})")


def check_distinct_stems(slides: Sequence[Path]) -> None:
    """Outputs are named by file stem, so two different slides with one stem would overwrite each other (or the
    second would be taken as already complete); refuse them, naming both."""
    seen: dict[str, Path] = {}
    for path in slides:
        first = seen.setdefault(path.stem, path)
        if first is not path and first.resolve() != path.resolve():
            raise InputError(path, f"has the same file name stem as {first}; their outputs ({path.stem}.csv ...) "
                                   "would collide, so predict them into different --out folders")


def _check_slide(path: Path, out: Path, options: PredictOptions) -> tuple[tuple[int, int], float]:
    """Open `path` and resolve its µm/px (the up-front check of `predict_slides`); returns (dimensions, µm/px)."""
    if path.is_dir():
        raise InputError(path, "is a directory, not a slide file")
    if not path.is_file():
        raise InputError(path, "slide not found")
    for target in output_paths(out, path.stem).values():
        if target.is_dir():
            raise InputError(target, "cannot write the output: is a directory")
    with open_slide(path, options.mpp, mpp_option="--slide-mpp") as slide:
        return tuple(slide.dimensions), float(slide.mpp)  # no µm/px in metadata or --slide-mpp: InputError naming --slide-mpp
