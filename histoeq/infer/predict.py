"""`histoeq predict`: classify the tissue tiles of whole slides with an exported ONNX model.

Per slide: lay the centred tile grid at the model's µm/px (`histoeq.slide.tiler`), keep tiles on the tissue mask of
the thumbnail, read them in a thread pool while the model runs (the tiler's block reader), gather the result in one
`SlidePrediction`, and hand it to the output writers asked for (`outputs`), writing their files and the JSON run
record atomically, as one set. One ONNX Runtime session serves all slides of the process. Slides that already have
every output asked for are skipped, and a slide missing some gets just those, so an interrupted or sharded job can
simply be run again. Everything that can be checked without running the model (options, output folder, every slide
and its µm/px) is checked first; those slides are kept open for the run (up to `KEEP_OPEN`), so each is opened once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2  # opencv-python-headless (albumentations' dependency): the heatmap thumbnail from the tissue image
import numpy as np

from histoeq import __version__
from histoeq.atomic import atomic_paths, check_output_dir
from histoeq.data.stain import StainTransform, sample_evenly
from histoeq.errors import HistoeqError, InputError, warn_input
from histoeq.infer.model_index import resolve_model
from histoeq.infer.onnx_model import OnnxTileModel
from histoeq.infer.operating_point import ResolvedOperatingPoint, apply_operating_point
from histoeq.infer.outputs import (
    DEFAULT_OUTPUTS,
    WRITERS,
    missing_outputs,
    output_paths,
    parse_outputs,
    record_path,
    remove_outputs,
    slide_summary,
    write_run_json,
    written_outputs,
)
from histoeq.infer.rerun import PredictSettings, claim_folder, slide_differences
from histoeq.infer.result import SlidePrediction
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide import Slide, open_slide
from histoeq.slide.context import NO_CONTEXT, context_kernel, smooth_on_grid
from histoeq.slide.kept import KeptOpen
from histoeq.slide.reader import mpp_override_problem
from histoeq.slide.tiler import TileGrid, iter_batches, tile_grid
from histoeq.slide.tissue import no_tissue_reason, tissue_fraction, tissue_mask

THUMBNAIL_PX = 1024  # heatmap background
TISSUE_PX = 2048  # tissue mask: 1025..2048 px (Slide.tissue_thumbnail); 50 px tiles of a 32k slide are 1.6 px there
STAIN_SAMPLE_TILES = 2048  # tiles read (evenly spread) to measure a slide's colour for a stain-normalised model


@dataclass
class PredictOptions:
    batch_size: int = 256
    stride_px: int | None = None  # model pixels between tiles; default: the tile size (no overlap)
    mpp: float | None = None  # override the slide's µm/px
    tissue_threshold: float = 0.25  # minimum tissue fraction of a tile; 0 keeps every tile
    block: int = 8  # tiles per side of one region read
    workers: int = max(2, min(8, os.cpu_count() or 2))
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS  # writer names (see `histoeq.infer.outputs.WRITERS`)
    # Spatial context kernel over the tile grid (histoeq.slide.context) and the p at or above which tiles form
    # tumour regions and the positive area; None: the model's operating point, else "none" / 0.5
    # (histoeq.infer.operating_point).
    context: str | None = None
    region_threshold: float | None = None


@dataclass
class SlideResult:
    slide: str
    skipped: bool
    tiles: int = 0
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    no_tissue: str | None = None  # why no tile was scored, when none was

    @property
    def tiles_per_s(self) -> float:
        return self.tiles / self.seconds if self.seconds else 0.0


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


@dataclass(frozen=True)
class TileSelection:
    """The tiles of one slide to score, and the images they were chosen on."""

    grid: TileGrid
    keep: np.ndarray  # bool (rows, cols)
    thumbnail: np.ndarray  # RGB heatmap background, longer side <= THUMBNAIL_PX
    thumbnail_downsample: float
    mask: np.ndarray  # tissue mask (True = tissue) of the slide reduced by `mask_downsample`
    mask_downsample: float
    no_tissue: str | None = None  # why no tile was kept (`no_tissue_reason`), None when some were


def select_tiles(slide: Slide, model: OnnxTileModel, options: PredictOptions) -> TileSelection:
    """The grid of one slide, the tiles on tissue, and the heatmap's thumbnail (made from the tissue image, so the
    slide is decoded for both once)."""
    meta = model.metadata
    grid = tile_grid(slide.dimensions, float(slide.mpp), meta.mpp, meta.tile_px, options.stride_px, slide.path)
    image, mask_ds = slide.tissue_thumbnail(TISSUE_PX)
    image = np.asarray(image)[..., :3]
    mask = tissue_mask(image)
    if options.tissue_threshold <= 0:
        keep = np.ones((grid.rows, grid.cols), dtype=bool)
    else:
        fraction = tissue_fraction(mask, float(mask_ds), grid.rects())
        keep = fraction.reshape(grid.rows, grid.cols) >= options.tissue_threshold
    w0, h0 = slide.dimensions
    shrink = max(1.0, max(w0, h0) / THUMBNAIL_PX)
    size = (min(image.shape[1], max(1, round(w0 / shrink))), min(image.shape[0], max(1, round(h0 / shrink))))
    thumb = image if size == image.shape[1::-1] else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    why = None
    if not keep.any():
        why = (f"no tissue found ({no_tissue_reason(image)})" if not mask.any() else
               f"no tile has a tissue fraction of at least {options.tissue_threshold:g}; --min-tissue 0 keeps all")
    return TileSelection(grid, keep, thumb, w0 / size[0], mask, float(mask_ds), why)


def slide_stain_transform(slide: Slide, grid: TileGrid, keep: np.ndarray, model: OnnxTileModel,
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
    batches = iter_batches(slide, grid, sample.reshape(keep.shape), options.batch_size, options.block,
                           options.workers)
    return StainTransform.measure(stain, (tiles for _, tiles in batches))


def run_tiles(
    slide: Slide, grid: TileGrid, keep: np.ndarray, model: OnnxTileModel, options: PredictOptions,
    progress: ProgressFn = null_progress, task: str = "predict", transform: StainTransform | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(flat grid indices, probabilities) of the kept tiles, in reading order; `transform` (the slide's stain
    normalisation) is applied to every batch before the model."""
    total = int(keep.sum())
    indices = np.empty(total, dtype=np.int64)
    probs = np.empty((total, len(model.classes)), dtype=np.float32)
    done, start = 0, time.perf_counter()
    for idx, tiles in iter_batches(slide, grid, keep, options.batch_size, options.block, options.workers):
        n = len(idx)
        indices[done : done + n] = idx
        probs[done : done + n] = model(tiles if transform is None else transform(tiles))
        done += n
        rate = done / max(time.perf_counter() - start, 1e-9)
        progress(task, done, total, f"{rate:,.0f} tiles/s")
    return indices[:done], probs[:done]


def predict_tiles(slide: Slide, model: OnnxTileModel, options: PredictOptions,
                  progress: ProgressFn = null_progress, point: ResolvedOperatingPoint | None = None) -> SlidePrediction:
    """Run the model over the tissue tiles of one open slide; the result record every output is written from.
    `point` is the resolved threshold and context when the caller has resolved `options` already."""
    start = time.perf_counter()
    if point is None:
        options, point = apply_operating_point(options, model.metadata.operating_point)
    chosen = select_tiles(slide, model, options)
    grid, keep = chosen.grid, chosen.keep
    transform = slide_stain_transform(slide, grid, keep, model, options)
    indices, probs = run_tiles(slide, grid, keep, model, options, progress, task=slide.path.name,
                               transform=transform)
    meta = model.metadata
    context_scores = None
    if options.context != NO_CONTEXT and len(indices):
        rows, cols = np.divmod(indices, grid.cols)  # grid cells: the centred grid turns with the slide
        context_scores = smooth_on_grid(cols, rows, probs[:, -1], 1.0, options.context).astype(np.float32)
    return SlidePrediction(
        slide=slide.path, dimensions=tuple(slide.dimensions), slide_mpp=float(slide.mpp), grid=grid,
        indices=indices, probabilities=probs, classes=list(model.classes), positive_class=meta.positive_class,
        thumbnail=chosen.thumbnail, thumbnail_downsample=chosen.thumbnail_downsample,
        model={"path": str(model.path), "name": meta.model_name, "group": meta.group, "classes": model.classes,
               "tile_px": meta.tile_px, "mpp": meta.mpp, "precision": meta.precision, "data_hash": meta.data_hash,
               "metrics": meta.metrics, "histoeq_version": meta.histoeq_version},
        provider=model.provider, options=asdict(options), outputs=tuple(options.outputs),
        stain=None if transform is None else transform.record(), inference_s=time.perf_counter() - start,
        context=options.context, context_scores=context_scores, tissue_mask=chosen.mask,
        tissue_downsample=chosen.mask_downsample, no_tissue=chosen.no_tissue,
        region_threshold=options.region_threshold, slide_mpp_in_file=slide.metadata_mpp,
        operating_point=point.record(),
    )


def write_prediction(pred: SlidePrediction, out_dir: Path, outputs: Sequence[str], started: float,
                     settings: PredictSettings | None = None) -> dict[str, str]:
    """Write `outputs` (writer names) of one slide and its JSON record, all or none; returns name -> file name.

    The record lists these outputs and those an earlier run wrote for this slide and that still exist, and is
    renamed last: its presence marks the listed outputs complete."""
    stem = pred.slide.stem
    paths = output_paths(out_dir, stem, outputs)
    kept = written_outputs(out_dir, stem)
    files = {name: WRITERS[name].path(out_dir, stem).name for name in WRITERS if name in outputs or name in kept}
    with atomic_paths([paths[name] for name in outputs] + [paths["json"]]) as tmps:
        for name, tmp in zip(outputs, tmps):
            WRITERS[name].write(tmp, pred)
        record = pred.record(files, time.perf_counter() - started, histoeq_version=__version__,
                             summary=slide_summary(pred).record(),
                             settings=None if settings is None else asdict(settings),
                             host=socket.gethostname(),
                             finished_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_run_json(tmps[-1], record)
    return {**{name: paths[name].name for name in outputs}, "json": paths["json"].name}


def predict_slide(
    slide: Slide, model: OnnxTileModel, out_dir: Path, options: PredictOptions, progress: ProgressFn = null_progress,
    outputs: Sequence[str] | None = None, settings: PredictSettings | None = None,
    point: ResolvedOperatingPoint | None = None,
) -> SlideResult:
    """Predict one open slide and write `outputs` (default: those of `options`) and its JSON record. `point` is
    the resolved threshold and context when the caller has resolved `options` already."""
    start = time.perf_counter()
    if point is None:
        options, point = apply_operating_point(options, model.metadata.operating_point)
    pred = predict_tiles(slide, model, options, progress, point)
    settings = settings or PredictSettings.of(model.path, options, point.sources)
    written = write_prediction(pred, Path(out_dir), tuple(options.outputs if outputs is None else outputs), start,
                               settings)
    return SlideResult(str(slide.path), False, pred.tile_count, time.perf_counter() - start, written,
                       pred.no_tissue)


def predict_slides(
    slides: Sequence[str | Path],
    model: str | Path | OnnxTileModel | None,
    out_dir: str | Path,
    *,
    device: str = "auto",
    options: PredictOptions | None = None,
    shard: str | None = None,
    progress: ProgressFn = null_progress,
    overwrite: bool = False,
) -> tuple[OnnxTileModel, list[SlideResult]]:
    """Predict this shard's slides with one ONNX Runtime session; returns (model with its provider, results).

    A slide whose outputs exist is skipped when they were made with this model (sha256) and these options
    (`histoeq.infer.rerun`); made otherwise, the run refuses before any work unless ``overwrite``."""
    options = options or PredictOptions()
    check_options(options)
    out = check_output_dir(out_dir)
    check_distinct_stems([Path(s) for s in slides])
    mine = shard_slides([Path(s) for s in slides], shard)
    with KeptOpen(lambda path: open_slide(path, options.mpp, mpp_option="--slide-mpp")) as kept:
        # Fail fast: every problem found here would otherwise surface only after hours of work on earlier slides.
        geometry = {}
        for path in mine:
            _check_paths(path, out, options)
            geometry[path] = kept.check(path, _geometry)
        if not isinstance(model, OnnxTileModel):
            model = OnnxTileModel(resolve_model(model), device)
        meta = model.metadata
        for path, (dimensions, mpp, _) in geometry.items():
            tile_grid(dimensions, mpp, meta.mpp, meta.tile_px, options.stride_px, path)
        options, point = apply_operating_point(options, meta.operating_point)
        settings = PredictSettings.of(model.path, options, point.sources)
        stale = _stale_slides(out, mine, settings, overwrite)
        claim_folder(out, settings, overwrite)
        for path, (_, _used, own) in geometry.items():  # after the checks: a refused run prints its error only
            problem = mpp_override_problem(options.mpp, own, "--slide-mpp")
            if problem is not None:
                warn_input(path, problem)
        results = []
        for path in mine:
            if path in stale:
                remove_outputs(out, path.stem)
            missing = missing_outputs(out, path.stem, options.outputs)
            if not missing:
                results.append(SlideResult(str(path), True))
                continue
            with kept.take(path) as slide:
                results.append(predict_slide(slide, model, out, options, progress, outputs=missing,
                                             settings=settings, point=point))
    return model, results


def _geometry(slide: Slide) -> tuple[tuple[int, int], float, float | None]:
    """(dimensions, µm/px used, µm/px in the file) of a slide in the up-front check."""
    return tuple(slide.dimensions), float(slide.mpp), slide.metadata_mpp


def _stale_slides(out: Path, slides: Sequence[Path], settings: PredictSettings, overwrite: bool) -> set[Path]:
    """Slides whose existing outputs were made with another model or options: refused up front, before any work,
    unless ``overwrite`` (then they are predicted again)."""
    stale = set()
    for path in slides:
        differs = slide_differences(record_path(out, path.stem), settings)
        if differs and not overwrite:
            raise InputError(record_path(out, path.stem), f"was made with {', '.join(differs)}; pass --overwrite to "
                                                          "replace it, or choose another --out")
        if differs:
            stale.add(path)
    return stale


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
    options.outputs = parse_outputs(options.outputs)
    if options.context is not None and options.context != NO_CONTEXT:
        context_kernel(options.context)
    if options.region_threshold is not None and not 0 < options.region_threshold <= 1:
        raise HistoeqError(f"--region-threshold must be in (0, 1] (got {options.region_threshold})")


def check_distinct_stems(slides: Sequence[Path]) -> None:
    """Outputs are named by file stem, so two different slides with one stem would overwrite each other (or the
    second would be taken as already complete); refuse them, naming both."""
    seen: dict[str, Path] = {}
    for path in slides:
        first = seen.setdefault(path.stem, path)
        if first is not path and first.resolve() != path.resolve():
            raise InputError(path, f"has the same file name stem as {first}; their outputs ({path.stem}.csv ...) "
                                   "would collide, so predict them into different --out folders")


def _check_paths(path: Path, out: Path, options: PredictOptions) -> None:
    """The slide is a file and none of its outputs is taken by a folder (part of the up-front check)."""
    if path.is_dir():
        raise InputError(path, "is a directory, not a slide file")
    if not path.is_file():
        raise InputError(path, "slide not found")
    for target in output_paths(out, path.stem, options.outputs).values():
        if target.is_dir():
            raise InputError(target, "cannot write the output: is a directory")
