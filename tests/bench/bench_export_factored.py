"""Factored vs expanded group convolutions in the exported ONNX graph: file size, outputs, ORT speed.

Exports the same run (or several, as an ensemble) twice, once with the filter banks expanded into plain
``Conv`` weights and once factored (parameters × shared expansion, what `histoeq export` writes), then runs both
files in onnxruntime on the same real IDC patches (or random tiles without ../shared/data), interleaved, and
prints one JSON line per variant.

    python tests/bench/bench_export_factored.py RUN [RUN…] [--tiles 256] [--repeats 5]

Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from histoeq.export.check_patches import check_patches  # noqa: E402
from histoeq.export.exporter import load_ensemble  # noqa: E402
from histoeq.export.graph import build_classifier, export_graph  # noqa: E402
from histoeq.runs.checkpoint import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model, info = load_model(args.runs[0]) if len(args.runs) == 1 else load_ensemble(args.runs)
    tile, norm = int(info["tile_px"]), info["normalisation"]
    tiles, source = check_patches(tile, count=args.tiles)
    sessions, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for factored in (False, True):
            name = "factored" if factored else "expanded"
            path = Path(tmp) / f"{name}.onnx"
            export_graph(build_classifier(model, norm["mean"], norm["std"], tile, factored=factored), tile, path, 18)
            sizes[name] = path.stat().st_size
            sessions[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = {name: s.run(["probabilities"], {"image": tiles})[0] for name, s in sessions.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(args.repeats):  # interleaved, so background load hits both alike
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(["probabilities"], {"image": tiles})
            times[name].append(time.perf_counter() - start)
    diff = float(np.abs(outputs["factored"] - outputs["expanded"]).max())
    for name in sessions:
        print(json.dumps({"variant": name, "runs": [str(r) for r in args.runs], "bytes": sizes[name],
                          "tiles": len(tiles), "patches": source, "median_seconds": float(np.median(times[name])),
                          "max_abs_diff_vs_other": diff}))


if __name__ == "__main__":
    main()
