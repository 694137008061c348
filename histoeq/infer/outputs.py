"""Per-slide result files, each written atomically (temporary name in the same folder, then `os.replace`).

* ``<stem>.csv``: one row per tile, ``minx,miny,width,height,prob_<class>...`` in level-0 pixels, as WSInfer writes.
* ``<stem>.geojson``: the same tiles as QuPath-ready objects (id, polygon, classification = most likely class with its
  colour, measurements = probabilities); streamed, so a 400k-tile slide needs no big buffer.
* ``<stem>.heatmap.png``: the positive-class probability over the thumbnail (see `heatmap`).
* ``<stem>.json``: run metadata, written last: its presence with all listed outputs marks the slide complete.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from histoeq.atomic import atomic_open

SUFFIXES = (".csv", ".geojson", ".heatmap.png", ".json")
# Okabe & Ito's colour-blind-safe palette (blue, orange, sky blue, bluish green, reddish purple, yellow): the first
# two classes (negative, positive in a binary model) never meet as red against green.
CLASS_COLOURS = [[0, 114, 178], [230, 159, 0], [86, 180, 233], [0, 158, 115], [204, 121, 167], [240, 228, 66]]


def class_colour(index: int) -> list[int]:
    """QuPath RGB of the class at `index` of a model's class list."""
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def feature_ids(count: int, base: uuid.UUID | None = None) -> list[str]:
    """`count` distinct UUID strings for QuPath object ids: one random UUID (or `base`) with its last 48 bits
    replaced by the feature's index, so a file's ids are unique and cost no per-feature random draw."""
    prefix = str(base or uuid.uuid4())[:24]
    return [f"{prefix}{i:012x}" for i in range(count)]


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
    path: Path, x: np.ndarray, y: np.ndarray, size: int, probs: np.ndarray, classes: Sequence[str],
    id_base: uuid.UUID | None = None,
) -> None:
    """QuPath detection tiles, each with its own object id (`feature_ids`; `id_base` fixes them for a reproducible
    file). Features are formatted from a template (json.dumps per feature was 5x slower); class names and
    measurement keys are JSON-escaped once."""
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    heads = [
        '{"type":"Feature","id":"%s","geometry":{"type":"Polygon","coordinates":[[[%d,%d],[%d,%d],[%d,%d],[%d,%d],[%d,%d]]]},'
        '"properties":{"objectType":"tile","classification":{"name":' + json.dumps(name)
        + ',"color":' + json.dumps(class_colour(i)) + '},"measurements":{'
        for i, name in enumerate(classes)
    ]
    keys = [json.dumps(f"prob_{name}") + ":%.6f" for name in classes]
    tail = ",".join(keys) + "}}}"

    def write(fh: IO[str]) -> None:
        fh.write('{"type":"FeatureCollection","features":[\n')
        xs, ys = x.tolist(), y.tolist()
        ids = feature_ids(len(xs), id_base)
        for i in range(len(xs)):
            x0, y0 = xs[i], ys[i]
            x1, y1 = x0 + size, y0 + size
            feature = (heads[best[i]] % (ids[i], x0, y0, x1, y0, x1, y1, x0, y1, x0, y0)
                       + tail % tuple(probs[i].tolist()))
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
