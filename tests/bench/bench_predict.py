"""Benchmark `predict` on synthetic-size real slides: memory must stay flat from 4k² to 32k².

Each size is benchmarked in a fresh subprocess, so one size's peak RSS does not carry over into the next.
Builds pyramidal tiled TIFFs (256 px tiles, levels 1, 1/2, … down to ~1k px as separate pages, which is how
OpenSlide sees pyramids; 4 µm/px resolution tags) by tiling a real IDC slide (mosaic of its level 0), in a temporary
folder, then runs `histoeq.infer.bench.bench_predict` on each with one ONNX session and prints one JSON line per slide.

    python tests/bench/bench_predict.py --model model.onnx --sizes 4096 32768 [--device cpu] [--out results.json]

Not collected by pytest (no test_ prefix): it takes minutes on big slides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from histoeq.infer import OnnxTileModel, PredictOptions  # noqa: E402
from histoeq.infer.bench import bench_predict  # noqa: E402
from histoeq.slide import open_slide  # noqa: E402

TILE = 256


def mosaic_tiles(source: np.ndarray, size: int):
    """Yield the 256 px tiles (row-major) of a size x size mosaic of `source`, without building the mosaic."""
    h, w = source.shape[:2]
    for y in range(0, size, TILE):
        rows = np.arange(y, y + TILE) % h
        band = source[rows]
        for x in range(0, size, TILE):
            yield band[:, np.arange(x, x + TILE) % w]


def write_pyramid(path: Path, source: np.ndarray, size: int, mpp: float = 4.0, compression: str = "jpeg") -> None:
    """Level 0 is the mosaic; level k is the mosaic of the source downsampled 2^k (so no big array is needed)."""
    levels = [(source, size)]
    k = 1
    # Halve down to ~1k px, as scanners' pyramids do: a pyramid that stops at 1/4 makes the 1024 px thumbnail of a
    # 32k slide decode a whole 8k level, which no real slide asks for.
    while size // 2**k >= 1024:
        small = source[:: 2**k, :: 2**k]  # nearest: the pyramid's lower levels are only for the thumbnail
        levels.append((small, size // 2**k))
        k += 1
    opts = {"compression": compression, "compressionargs": {"level": 90} if compression == "jpeg" else {"level": 1}}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, (src, side) in enumerate(levels):
            side = side - side % TILE if i else side
            tif.write(
                mosaic_tiles(src, side), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE),
                photometric="rgb", resolution=(1e4 / (mpp * 2**i), 1e4 / (mpp * 2**i)), resolutionunit="CENTIMETER",
                subfiletype=1 if i else 0, **opts,
            )


def bench_one(path: Path, args: argparse.Namespace) -> dict:
    """Benchmark one built slide in this (fresh) process."""
    model = OnnxTileModel(args.model, args.device)
    options = PredictOptions(batch_size=args.batch_size)
    if args.workers:
        options.workers = args.workers
    result = bench_predict(path, model, options)
    return {
        "tiles": result.tiles, "provider": result.provider, "batch": result.batch_size,
        "workers": result.workers, "cpus": os.cpu_count(),
        "rates": {k: round(v, 1) for k, v in result.rates.items()}, "seconds": result.seconds,
        "peak_rss_mb": {k: round(v, 1) for k, v in result.peak_rss_mb.items()},
        "baseline_rss_mb": round(result.baseline_rss_mb, 1), "overlap_ratio": round(result.overlap_ratio, 3),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--source", default=None, help="IDC slide to tile [default: shared data 8918.tiff]")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--compression", default="jpeg")
    parser.add_argument("--out", default=None)
    parser.add_argument("--bench-one", default=None, help=argparse.SUPPRESS)  # internal: bench this built slide
    args = parser.parse_args()
    if args.bench_one:
        print(json.dumps(bench_one(Path(args.bench_one), args)), flush=True)
        return
    source_path = Path(args.source or Path(__file__).resolve().parents[3] / "shared/data/idc/slides/8918.tiff")
    with open_slide(source_path) as slide:
        source = slide.read_region((0, 0), slide.dimensions, slide.mpp)
    results = []
    with tempfile.TemporaryDirectory(prefix="histoeq-bench-slides-") as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"mosaic_{size}.tiff"
            start = time.perf_counter()
            write_pyramid(path, source, size, compression=args.compression)
            built = time.perf_counter() - start
            child = subprocess.run(
                [sys.executable, __file__, "--bench-one", str(path), *sys.argv[1:]],
                check=True, capture_output=True, text=True,
            )
            row = {"size": size, "file_mb": round(path.stat().st_size / 2**20, 1), "build_s": round(built, 1),
                   **json.loads(child.stdout.strip().splitlines()[-1])}
            print(json.dumps(row), flush=True)
            results.append(row)
            path.unlink()
    if len(results) >= 2:
        first, last = results[0], results[-1]
        ratio = last["max_rss_mb"] / first["max_rss_mb"]
        print(json.dumps({"peak_rss_ratio_largest_vs_smallest": round(ratio, 3)}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
