"""`histoeq bench extract`: is extraction as fast as just reading the same regions with OpenSlide?

Baseline: plain ``openslide.OpenSlide.read_region`` of every tile the extraction keeps, one call per tile (fresh
handle, so a cold OpenSlide tile cache, like the extraction's), converted to an array: the least any extractor must
do. Both sides run `repeats` times, interleaved, and the fastest run of each is compared: on 2 shared cores single
runs of ~0.1 s vary by +-30 %.
Extraction: the whole `extract_dataset` call, planning (thumbnail, tissue mask, labels) and writing included;
only one-time process costs (module imports) are paid before timing, for both sides.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from histoeq.data.annotations import RegionAnnotations, find_for_slide
from histoeq.data.extract import GEOJSON_SUFFIXES, ExtractOptions, extract_dataset, plan_grid
from histoeq.errors import InputError
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide import open_slide


def _openslide_read_all(path: Path, xs: np.ndarray, ys: np.ndarray, level: int, size: int) -> float:
    import openslide  # loads the OpenSlide C library; only this comparison needs it directly

    slide = openslide.OpenSlide(str(path))
    try:
        start = time.perf_counter()
        for x, y in zip(xs, ys):
            np.asarray(slide.read_region((int(round(x)), int(round(y))), level, (size, size)))[:, :, :3]
        return time.perf_counter() - start
    finally:
        slide.close()


def bench_extract(slide_path: Path, annotations: Path | None = None, options: ExtractOptions | None = None,
                  repeats: int = 3, progress: ProgressFn = null_progress) -> dict:
    """Time extraction of one slide against OpenSlide read-only of the same tiles; returns both rates and ratio."""
    opts = options or ExtractOptions()
    opts.check()
    if repeats < 1:
        raise InputError(None, f"--repeats must be at least 1, got {repeats}")
    slide_path = Path(slide_path)
    ann = None if annotations is None else find_for_slide(Path(annotations), slide_path, GEOJSON_SUFFIXES)
    with open_slide(slide_path, mpp=opts.slide_mpp, reader="openslide", mpp_option="--slide-mpp") as slide:
        if slide.backend != "openslide":
            raise InputError(slide_path, f"OpenSlide cannot read this slide (backend {slide.backend}); "
                                         "the benchmark compares against OpenSlide")
        regions = RegionAnnotations.load(ann, opts.classes, opts.ignore) if ann is not None else None
        plan = plan_grid(slide, regions, opts)
        ds = opts.mpp / slide.mpp
        level = slide.best_level(ds)
        level_size = int(round(opts.patch_size * ds / slide.level_downsamples[level]))
        n = len(plan.xs)
        if n == 0:
            raise InputError(slide_path, "no tiles to benchmark (no tissue / annotations)")
        native = abs(level_size - opts.patch_size) == 0
    # one-time costs (imports, first open) are not throughput
    with open_slide(slide_path, mpp=opts.slide_mpp, mpp_option="--slide-mpp"):
        pass
    read_times, extract_times = [], []
    steps = 2 * repeats
    with tempfile.TemporaryDirectory(prefix="histoeq-bench-") as tmp:
        for r in range(repeats):  # interleaved, so both sides see the same machine load
            progress("bench", 2 * r, steps, "openslide read-only")
            read_times.append(_openslide_read_all(slide_path, plan.xs, plan.ys, level, level_size))
            progress("bench", 2 * r + 1, steps, "extract")
            start = time.perf_counter()
            summary = extract_dataset([slide_path], Path(tmp) / f"bench-dataset-{r}", annotations=annotations,
                                      options=opts)
            extract_times.append(time.perf_counter() - start)
    progress("bench", steps, steps, "")
    read_s, extract_s = min(read_times), min(extract_times)
    read_rate, extract_rate = n / read_s, summary["n"] / extract_s
    return {"slide": str(slide_path), "tiles": n, "extracted": summary["n"], "level": level,
            "level_tile_px": level_size, "resampled": not native, "workers": opts.workers,
            "repeats": repeats, "openslide_read_s": read_s, "openslide_tiles_per_s": read_rate,
            "extract_s": extract_s, "extract_tiles_per_s": extract_rate, "ratio": extract_rate / read_rate}
