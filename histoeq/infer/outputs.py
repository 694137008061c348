"""Per-slide result files: a registry of output writers, each a function of one `SlidePrediction`.

* ``csv`` -> ``<stem>.csv``: one row per tile, ``minx,miny,width,height,prob_<class>...`` in level-0 pixels, as
  WSInfer writes.
* ``geojson`` -> ``<stem>.geojson``: the same tiles as QuPath-ready objects (id, polygon, classification = most likely
  class with its colour, measurements = probabilities); streamed, so a 400k-tile slide needs no big buffer.
* ``heatmap`` -> ``<stem>.heatmap.png``: the positive-class probability over the thumbnail (see `heatmap`).
* ``tissue`` -> ``<stem>.tissue.png``: the tissue mask tiles were chosen by, to check it.
* ``regions`` -> ``<stem>.regions.geojson`` (on request): merged tumour regions with their area in mm², as QuPath
  annotations (see `regions`).
* ``<stem>.json``: the run record, always written, last: it lists the output files of the slide, and a slide is
  complete for a run when every output that run asks for is listed there and exists.

Each file is written atomically (temporary name in the same folder, then `os.replace`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from histoeq.atomic import write_atomically
from histoeq.errors import HistoeqError, InputError, clip
from histoeq.infer.heatmap import probability_grid, write_heatmap_png, write_tissue_mask_png
from histoeq.infer.qupath import class_colour, feature_ids
from histoeq.infer.regions import tumour_regions, write_regions_geojson
from histoeq.infer.result import SlidePrediction
from histoeq.infer.summary import SlideSummary, summarise_slide

RECORD_SUFFIX = ".json"
def write_tiles_csv(path: Path, pred: SlidePrediction) -> None:
    """WSInfer's layout; pandas' C writer keeps 400k rows well under a second."""
    x, y = pred.top_left
    frame = pd.DataFrame({"minx": x, "miny": y, "width": pred.tile_size, "height": pred.tile_size})
    for i, name in enumerate(pred.classes):
        frame[f"prob_{name}"] = pred.probabilities[:, i]
    if pred.context_scores is not None:
        frame[pred.context_column] = pred.context_scores
    write_atomically(path, lambda fh: frame.to_csv(fh, index=False, float_format="%.6f", lineterminator="\n"))


def write_tiles_geojson(path: Path, pred: SlidePrediction, id_base: uuid.UUID | None = None) -> None:
    """QuPath detection tiles, each with its own object id (`feature_ids`; `id_base` fixes them for a reproducible
    file). Features are formatted from a template (json.dumps per feature was 5x slower); class names and
    measurement keys are JSON-escaped once."""
    probs, classes, size = pred.probabilities, pred.classes, pred.tile_size
    x, y = pred.top_left
    best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    heads = [
        '{"type":"Feature","id":"%s","geometry":{"type":"Polygon","coordinates":[[[%d,%d],[%d,%d],[%d,%d],[%d,%d],[%d,%d]]]},'
        '"properties":{"objectType":"tile","classification":{"name":' + json.dumps(name)
        + ',"color":' + json.dumps(class_colour(i)) + '},"measurements":{'
        for i, name in enumerate(classes)
    ]
    keys = [json.dumps(f"prob_{name}") + ":%.6f" for name in classes]
    columns = probs
    if pred.context_scores is not None:
        keys.append(json.dumps(pred.context_column) + ":%.6f")
        columns = np.column_stack([probs, pred.context_scores])
    tail = ",".join(keys) + "}}}"

    def write(fh: IO[str]) -> None:
        fh.write('{"type":"FeatureCollection","features":[\n')
        xs, ys = x.tolist(), y.tolist()
        ids = feature_ids(len(xs), id_base)
        for i in range(len(xs)):
            x0, y0 = xs[i], ys[i]
            x1, y1 = x0 + size, y0 + size
            feature = (heads[best[i]] % (ids[i], x0, y0, x1, y0, x1, y1, x0, y1, x0, y0)
                       + tail % tuple(columns[i].tolist()))
            fh.write(("," if i else "") + feature + "\n")
        fh.write("]}\n")

    write_atomically(path, write)


def object_id_base(pred: SlidePrediction, kind: str) -> uuid.UUID:
    """A UUID fixed by slide, model and output kind, so a rerun writes byte-identical files with the same ids."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"histoeq:{kind}:{pred.slide.name}:{pred.model.get('path')}")


def write_tiles_geojson_file(path: Path, pred: SlidePrediction) -> None:
    write_tiles_geojson(path, pred, object_id_base(pred, "tiles"))


def write_heatmap(path: Path, pred: SlidePrediction) -> None:
    """The heatmap PNG. Drawing it is the one step of a slide's outputs whose memory grows with the picture
    (matplotlib's Agg canvas and PNG encoder), so running out of memory or a matplotlib failure there is reported
    as one line naming the file; the slide's outputs are then written as none (`write_prediction`)."""
    heat = probability_grid(pred.grid, pred.indices, pred.scores)
    label = pred.positive_class if pred.context_scores is None else f"{pred.positive_class}, context {pred.context}"
    try:
        write_heatmap_png(path, pred.thumbnail, pred.thumbnail_downsample, pred.grid, heat, label,
                          slide_name=pred.slide.name, model_name=pred.model.get("name"), mpp=pred.slide_mpp)
    except HistoeqError:
        raise
    except MemoryError:
        raise InputError(path, "cannot draw the heatmap: out of memory (free memory, or leave heatmap out of "
                               "--outputs)") from None
    except (ValueError, RuntimeError, OverflowError) as exc:  # matplotlib / Agg refusing the picture
        raise InputError(path, f"cannot draw the heatmap ({clip(str(exc), 100) or type(exc).__name__}; leave "
                               "heatmap out of --outputs to skip it)") from None


def write_tissue(path: Path, pred: SlidePrediction) -> None:
    if pred.tissue_mask is None:
        raise HistoeqError(f"{pred.slide}: no tissue mask to write")
    write_tissue_mask_png(path, pred.tissue_mask, pred.mask_downsample, pred.slide_mpp)


def write_regions(path: Path, pred: SlidePrediction) -> None:
    """Tumour regions: tiles with p (with context when there is one) >= the region threshold, merged."""
    regions = tumour_regions(pred.grid, pred.indices, pred.scores, pred.slide_mpp, pred.region_threshold)
    write_regions_geojson(path, regions, pred.positive_class, class_colour(len(pred.classes) - 1),
                          pred.region_threshold, object_id_base(pred, "regions"))


def slide_summary(pred: SlidePrediction) -> SlideSummary:
    """Tiles, tissue and positive area in mm² and mean p of one slide, for its JSON record."""
    mask = pred.tissue_mask if pred.tissue_mask is not None else np.zeros((1, 1), dtype=bool)
    return summarise_slide(pred.slide.name, str(pred.model.get("name")), pred.positive_class, pred.grid, pred.scores,
                           mask, pred.mask_downsample, pred.slide_mpp, pred.region_threshold)


@dataclass(frozen=True)
class OutputWriter:
    """One output format: its name (for ``--outputs``), the file suffix after the slide's stem, and the writer."""

    name: str
    suffix: str
    write: Callable[[Path, SlidePrediction], None]

    def path(self, out_dir: Path, stem: str) -> Path:
        return out_dir / f"{stem}{self.suffix}"


WRITERS: dict[str, OutputWriter] = {w.name: w for w in (
    OutputWriter("csv", ".csv", write_tiles_csv),
    OutputWriter("geojson", ".geojson", write_tiles_geojson_file),
    OutputWriter("heatmap", ".heatmap.png", write_heatmap),
    OutputWriter("tissue", ".tissue.png", write_tissue),
    OutputWriter("regions", ".regions.geojson", write_regions),
)}
DEFAULT_OUTPUTS: tuple[str, ...] = ("csv", "geojson", "heatmap", "tissue")  # regions on request


def parse_outputs(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"csv,geojson"`` (or a list of names) -> the writers' names, in registry order; None -> the defaults.

    An unknown or missing name is a `HistoeqError` listing the choices."""
    if text is None:
        return DEFAULT_OUTPUTS
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in WRITERS]
    if unknown or not names:
        what = f"unknown output {', '.join(map(repr, unknown))}" if unknown else "no output named"
        raise HistoeqError(f"--outputs: {what} (choose from {', '.join(WRITERS)}; the JSON record is always written)")
    return tuple(n for n in WRITERS if n in names)


def record_path(out_dir: Path, stem: str) -> Path:
    return out_dir / f"{stem}{RECORD_SUFFIX}"


def output_paths(out_dir: Path, stem: str, outputs: Sequence[str] = DEFAULT_OUTPUTS) -> dict[str, Path]:
    """The files of `outputs` (writer names) for one slide, plus its JSON record under ``"json"``."""
    return {**{name: WRITERS[name].path(out_dir, stem) for name in outputs}, "json": record_path(out_dir, stem)}


def written_outputs(out_dir: Path, stem: str) -> dict[str, str]:
    """The outputs a previous run recorded for this slide whose files still exist (name -> file name); empty when
    there is no readable record."""
    try:
        record = json.loads(record_path(out_dir, stem).read_text())
    except (OSError, ValueError):
        return {}
    listed = record.get("outputs") if isinstance(record, dict) else None
    if not isinstance(listed, dict):
        return {}
    files = {str(f) for f in listed.values() if isinstance(f, str)}
    return {name: w.path(out_dir, stem).name for name, w in WRITERS.items()
            if w.path(out_dir, stem).name in files and w.path(out_dir, stem).is_file()}


def missing_outputs(out_dir: Path, stem: str, outputs: Sequence[str]) -> tuple[str, ...]:
    """Which of `outputs` this slide still lacks: all of them unless its record lists them and their files exist.
    An empty answer means the slide is complete for this run."""
    done = written_outputs(out_dir, stem)
    return tuple(name for name in outputs if name not in done)


def remove_outputs(out_dir: Path, stem: str) -> None:
    """Delete a slide's record first (so it no longer claims anything), then every output file it may have."""
    record_path(out_dir, stem).unlink(missing_ok=True)
    for writer in WRITERS.values():
        writer.path(out_dir, stem).unlink(missing_ok=True)


def write_run_json(path: Path, record: dict[str, Any]) -> None:
    write_atomically(path, lambda fh: json.dump(record, fh, indent=2, sort_keys=True))
