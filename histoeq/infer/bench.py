"""`histoeq bench predict`: is whole-slide inference limited by reading, by the model, or by neither?

One run measures, on one slide and one ONNX Runtime session:

* read-only: the threaded block reader alone (tiles/s), no model;
* model-only: the session on tiles already in memory, same batch size, same number of tiles;
* pipeline: reading and model overlapped, as `predict` runs them (tiles/s of the tile stage);
* end-to-end: opening the slide and the whole `predict_slide` (thumbnail, tissue mask, tiles, the outputs asked for
  and the JSON record) into a temporary folder;
* peak resident memory (RSS) during each phase, sampled every 5 ms from /proc, next to the RSS before it.

The goal is pipeline >= 0.9 x min(read-only, model-only) (the overlap hides the cheaper stage) and a peak RSS that
does not grow with slide size. Read-only runs first and so warms the OS page cache for the phases after it.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histoeq.infer.onnx_model import OnnxTileModel
from histoeq.infer.predict import (
    PredictOptions,
    check_options,
    predict_slide,
    run_tiles,
    select_tiles,
    slide_stain_transform,
)
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide import open_slide
from histoeq.slide.tiler import iter_batches

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


class PeakMemory:
    """Samples RSS in a background thread; `peak` is the maximum seen inside `watch()`."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = 0

    @contextmanager
    def watch(self) -> Iterator[PeakMemory]:
        self.peak = rss_bytes()
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                self.peak = max(self.peak, rss_bytes())
                stop.wait(self.interval_s)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak = max(self.peak, rss_bytes())


@dataclass
class PredictBenchResult:
    slide: str
    dimensions: tuple[int, int]
    tiles: int
    provider: str
    batch_size: int
    workers: int
    rates: dict[str, float] = field(default_factory=dict)  # tiles/s per phase
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    baseline_rss_mb: float = 0.0

    @property
    def overlap_ratio(self) -> float:
        """pipeline / min(read-only, model-only): 1.0 means the slower stage alone sets the pace."""
        slower = min(self.rates.get("read-only", 0.0), self.rates.get("model-only", 0.0))
        return self.rates.get("pipeline", 0.0) / slower if slower else 0.0


def bench_predict(
    slide_path: str | Path,
    model: OnnxTileModel,
    options: PredictOptions | None = None,
    progress: ProgressFn = null_progress,
) -> PredictBenchResult:
    """Run the four phases on one slide; see the module docstring."""
    options = options or PredictOptions()
    check_options(options)
    slide_path = Path(slide_path)
    meter = PeakMemory()
    baseline = rss_bytes()
    with open_slide(slide_path, options.mpp, mpp_option="--slide-mpp") as slide:
        chosen = select_tiles(slide, model, options)
        grid, keep = chosen.grid, chosen.keep
        total = int(keep.sum())
        result = PredictBenchResult(
            str(slide_path), tuple(slide.dimensions), total, model.provider, options.batch_size, options.workers
        )
        result.baseline_rss_mb = baseline / 2**20

        def record(phase: str, tiles: int, seconds: float) -> None:
            result.seconds[phase] = round(seconds, 3)
            result.rates[phase] = tiles / seconds if seconds > 0 else 0.0
            result.peak_rss_mb[phase] = meter.peak / 2**20

        with meter.watch():
            start, done, first = time.perf_counter(), 0, None
            for idx, tiles in iter_batches(slide, grid, keep, options.batch_size, options.block, options.workers):
                done += len(idx)
                first = tiles if first is None else first
                progress("read-only", done, total)
            record("read-only", done, time.perf_counter() - start)

        if first is not None:
            batch = first
            if len(first) < options.batch_size:
                batch = np.resize(first, (options.batch_size, *first.shape[1:]))
            model(batch)  # warm-up: session allocations and (on CUDA) kernel selection are not throughput
            with meter.watch():
                start, done = time.perf_counter(), 0
                while done < total:
                    model(batch)
                    done += len(batch)
                    progress("model-only", done, total)
                record("model-only", done, time.perf_counter() - start)

        with meter.watch():
            start = time.perf_counter()
            transform = slide_stain_transform(slide, grid, keep, model, options)  # a stain-normalised model's cost too
            indices, _ = run_tiles(slide, grid, keep, model, options, progress, task="pipeline", transform=transform)
            record("pipeline", len(indices), time.perf_counter() - start)

        with tempfile.TemporaryDirectory(prefix="histoeq-bench-") as tmp, meter.watch():
            start = time.perf_counter()
            # as predict: open, then predict
            with open_slide(slide_path, options.mpp, mpp_option="--slide-mpp") as fresh:
                outcome = predict_slide(fresh, model, Path(tmp), options, progress)
            record("end-to-end", outcome.tiles, time.perf_counter() - start)
    return result
