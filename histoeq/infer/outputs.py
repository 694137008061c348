"""Per-slide result files, each written atomically (temporary name in the same folder, then `os.replace`).

* ``<stem>.csv``: one row per tile, ``minx,miny,width,height,prob_<class>...`` in level-0 pixels, as WSInfer writes.
* ``<stem>.geojson``: the same tiles as QuPath-ready objects (polygon, classification = most likely class with its
  colour, measurements = probabilities); streamed, so a 400k-tile slide needs no big buffer.
* ``<stem>.heatmap.png``: the positive-class probability over the thumbnail (see `heatmap`).
* ``<stem>.json``: run metadata, written last: its presence with all listed outputs marks the slide complete.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from histoeq.atomic import atomic_open

SUFFIXES = (".csv", ".geojson", ".heatmap.png", ".json")
_COLOURS = [[0, 153, 0], [204, 0, 0], [0, 102, 204], [230, 159, 0], [128, 0, 128], [0, 158, 115]]


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    return {suffix: out_dir / f"{stem}{suffix}" for suffix in SUFFIXES}


def write_atomically(path: Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Call `write` on a temporary file next to `path`, then rename it over `path` (never a half-written file)."""
    with atomic_open(path, binary=binary) as fh:
        write(fh)


def write_tiles_csv(
    path: Path, x: np.ndarray, y: np.ndarray, size: int, probs: np.ndarray, classes: Sequence[str]
) -> None:
    """WSInfer's layout; pandas' C writer keeps 400k rows well under a second."""
    frame = pd.DataFrame({"minx": x, "miny": y, "width": size, "height": size})
    for i, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, i]
    write_atomically(path, lambda fh: frame.to_csv(fh, index=False, float_format="%.6f", lineterminator="\n"))


def write_tiles_geojson(
    path: Path, x: np.ndarray, y: np.ndarray, size: int, probs: np.ndarray, classes: Sequence[str]
) -> None:
    """QuPath detection tiles. Features are formatted from a template (json.dumps per feature was 5x slower);
    class names and measurement keys are JSON-escaped once."""
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    heads = [
        '{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[%d,%d],[%d,%d],[%d,%d],[%d,%d],[%d,%d]]]},'
        '"properties":{"objectType":"tile","classification":{"name":' + json.dumps(name)
        + ',"color":' + json.dumps(_COLOURS[i % len(_COLOURS)]) + '},"measurements":{'
        for i, name in enumerate(classes)
    ]
    keys = [json.dumps(f"prob_{name}") + ":%.6f" for name in classes]
    tail = ",".join(keys) + "}}}"

    def write(fh: IO[str]) -> None:
        fh.write('{"type":"FeatureCollection","features":[\n')
        xs, ys = x.tolist(), y.tolist()
        for i in range(len(xs)):
            x0, y0 = xs[i], ys[i]
            x1, y1 = x0 + size, y0 + size
            feature = heads[best[i]] % (x0, y0, x1, y0, x1, y1, x0, y1, x0, y0) + tail % tuple(probs[i].tolist())
            fh.write(("," if i else "") + feature + "\n")
        fh.write("]}\n")

    write_atomically(path, write)


def write_run_json(path: Path, record: dict[str, Any]) -> None:
    write_atomically(path, lambda fh: json.dump(record, fh, indent=2, sort_keys=True))


def is_complete(out_dir: Path, stem: str) -> bool:
    """Whether a previous run finished this slide: the JSON record exists, parses and its outputs all exist."""
    paths = output_paths(out_dir, stem)
    try:
        record = json.loads(paths[".json"].read_text())
    except (OSError, ValueError):
        return False
    listed = record.get("outputs", {}) if isinstance(record, dict) else {}
    return all((out_dir / Path(name).name).is_file() for name in listed.values()) and len(listed) >= 3
