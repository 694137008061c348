"""Slide annotations: QuPath-style GeoJSON polygons (region labels) and point files (cell detections).

GeoJSON: a FeatureCollection (or a bare list of features, as older QuPath writes) in level-0 pixels; each feature's
class is ``properties.classification.name`` (QuPath), else ``properties.classification.names`` (QuPath 0.4+ writes
a list, one entry per part of a derived class; joined with ": " as QuPath shows them), else
``properties.classification`` as a string, else ``properties.name``. Polygons of one class are merged with shapely.
Where classes overlap (QuPath users draw "Tumour" inside "Tissue") the class later in the class list wins, so each
class's geometry is made disjoint from the ones after it; labels by centre or by area are then unambiguous.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from shapely.geometry import shape
from shapely.ops import unary_union

from histoeq.errors import InputError, clip
from histoeq.slide.budget import check_json_text

# What an annotation file may ask of memory and of GEOS. QuPath exports of a whole slide's regions are a few MB with
# 10^5-10^6 vertices; JSON numbers become Python objects of ~10x their text size, so these keep parsing under ~3 GB.
MAX_ANNOTATION_BYTES = 256 << 20
MAX_ANNOTATION_VERTICES = 10_000_000
# GeoJSON nests ~8 levels (collection, feature, geometry, polygon rings, positions) plus QuPath's properties.
MAX_ANNOTATION_DEPTH = 64
# GEOS's validity check and repair grow faster than the vertex count on dense rings (a 200k-vertex ring 2 s, 1M 45 s),
# so a polygon denser than this is first simplified by a quarter of a level-0 pixel: detail finer than that cannot
# move a tile's label, and make_valid repairs anything the simplification crosses.
SIMPLIFY_ABOVE_VERTICES = 50_000
SIMPLIFY_TOLERANCE_PX = 0.25


def find_for_slide(source: Path, slide: Path, suffixes: tuple[str, ...]) -> Path | None:
    """`source` itself when it is a file, else ``source/<slide stem><suffix>`` for the first suffix that exists."""
    if source.is_file():
        return source
    if not source.exists():
        raise InputError(source, "no such file or folder")
    for suffix in suffixes:
        candidate = source / f"{slide.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _class_name(props: dict | None) -> str | None:
    props = props or {}
    cls = props.get("classification")
    if isinstance(cls, dict) and cls.get("name"):
        return str(cls["name"])
    if isinstance(cls, dict) and isinstance(cls.get("names"), list):
        parts = [str(part) for part in cls["names"] if part not in (None, "")]
        if parts:
            return ": ".join(parts)
    if isinstance(cls, str) and cls:
        return cls
    name = props.get("name")
    return str(name) if name else None


def _load_features(path: Path) -> list[dict]:
    try:
        size = path.stat().st_size
        if size > MAX_ANNOTATION_BYTES:  # refused before reading it
            raise InputError(path, f"annotation file is {size / 2**20:.0f} MiB, over the "
                                   f"{MAX_ANNOTATION_BYTES >> 20} MiB budget")
        raw = path.read_bytes()
        check_json_text(path, raw, "annotation file", MAX_ANNOTATION_BYTES, MAX_ANNOTATION_DEPTH)
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(path, "not a GeoJSON file (not text)") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        feats = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        feats = [data]
    elif isinstance(data, list):
        feats = data
    else:
        raise InputError(path, "not a GeoJSON FeatureCollection")
    if not isinstance(feats, list):
        raise InputError(path, "GeoJSON 'features' is not a list")
    vertices = 0
    for i, feat in enumerate(feats):
        if not isinstance(feat, dict):
            raise InputError(path, f"features[{i}] is not a GeoJSON Feature object")
        vertices += _count_positions(feat.get("geometry"))
        if vertices > MAX_ANNOTATION_VERTICES:
            raise InputError(path, f"annotations have more than {MAX_ANNOTATION_VERTICES:,} vertices (the budget); "
                                   "simplify the polygons or split the file")
    return feats


def _count_positions(geometry: object) -> int:
    """Coordinate positions in a GeoJSON geometry (lists of numbers), without building shapes; the nesting was
    bounded when the file was read."""
    count, stack = 0, [geometry]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            parts = item.get("geometries")
            stack += [item.get("coordinates"), *(parts if isinstance(parts, list) else [])]
        elif isinstance(item, list):
            if item and not isinstance(item[0], list | dict):
                count += 1
            else:
                stack += item
    return count


_GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                   "GeometryCollection"}


def _geometry(feat: dict, path: Path, i: int) -> shapely.Geometry:
    """The feature's geometry; `InputError` naming the file and feature when it is missing or unusable, because
    dropping it silently could remove a whole class from the dataset."""
    raw = feat.get("geometry")
    if raw is None:
        raise InputError(path, f"features[{i}] has no geometry")
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in _GEOMETRY_TYPES:
        raise InputError(path, f"features[{i}] has an unknown geometry type {kind!r}")
    try:
        with np.errstate(invalid="ignore"):  # NaN coordinates: reported below as one error, not a warning
            geom = shape(raw)
    except Exception as exc:  # shapely raises several types on malformed coordinates
        why = clip(str(exc), 80) or type(exc).__name__
        raise InputError(path, f"features[{i}] has a malformed {kind} ({why})") from None
    if geom.is_empty:
        raise InputError(path, f"features[{i}] has an empty {kind}")
    if not np.isfinite(shapely.get_coordinates(geom)).all():
        raise InputError(path, f"features[{i}] has non-finite coordinates (NaN or infinity)")
    return geom


@dataclass
class ParsedAnnotations:
    """A GeoJSON file's polygons merged per class, before classes are chosen: the costly part of reading
    annotations (JSON, shapes, make_valid, unions), done once per file however many steps use it."""

    path: Path
    merged: dict[str, shapely.Geometry]  # union of the polygons of each class
    counts: dict[str, int]  # polygon features per class
    ignored: dict[str, int]  # features no class can use (not a polygon, no class): reason -> count


def parse_annotations(path: Path) -> ParsedAnnotations:
    """Read and merge the polygons of a GeoJSON file; `InputError` naming it when it cannot be used."""
    try:
        with np.errstate(all="ignore"):  # the overflow below is reported as one error, not also as a warning
            return _parse(path)
    except shapely.errors.GEOSException as exc:  # e.g. coordinates near 1e308 overflow GEOS's arithmetic
        raise InputError(path, f"polygons GEOS cannot process ({clip(str(exc), 100)})") from None


def _parse(path: Path) -> ParsedAnnotations:
    by_class: dict[str, list] = {}
    ignored: dict[str, int] = {}
    for i, feat in enumerate(_load_features(path)):
        props = feat.get("properties")
        name = _class_name(props if isinstance(props, dict) else None)
        geom = _geometry(feat, path, i)
        if geom.geom_type not in ("Polygon", "MultiPolygon"):  # e.g. QuPath point/line annotations
            ignored["not a polygon"] = ignored.get("not a polygon", 0) + 1
        elif name is None:
            ignored["no class"] = ignored.get("no class", 0) + 1
        else:
            if shapely.get_num_coordinates(geom) > SIMPLIFY_ABOVE_VERTICES:
                geom = shapely.simplify(geom, SIMPLIFY_TOLERANCE_PX, preserve_topology=False)
            by_class.setdefault(name, []).append(shapely.make_valid(geom))
    return ParsedAnnotations(path, {name: unary_union(geoms) for name, geoms in by_class.items()},
                             {name: len(geoms) for name, geoms in by_class.items()}, ignored)


@dataclass
class RegionAnnotations:
    """Polygons per class (disjoint after priority resolution), in level-0 pixels."""

    path: Path
    classes: list[str]  # label index == position; later classes win overlaps
    geometries: list[shapely.Geometry]
    ignored: dict[str, int]  # features skipped: reason -> count
    areas: dict[str, float]  # annotated area per class before overlaps are resolved (orders classes by default)

    @classmethod
    def load(cls, path: Path, classes: list[str] | None = None, ignore: set[str] | None = None) -> RegionAnnotations:
        """Read polygons; `classes` fixes the label order (default: by total area, largest first = label 0)."""
        return cls.of(parse_annotations(path), classes, ignore)

    @classmethod
    def of(cls, parsed: ParsedAnnotations, classes: list[str] | None = None,
           ignore: set[str] | None = None) -> RegionAnnotations:
        """The regions of already parsed annotations, for `classes` without those in `ignore` (see `load`)."""
        try:
            with np.errstate(all="ignore"):
                return cls._resolve(parsed, classes, ignore or set())
        except shapely.errors.GEOSException as exc:
            raise InputError(parsed.path, f"polygons GEOS cannot process ({clip(str(exc), 100)})") from None

    @classmethod
    def _resolve(cls, parsed: ParsedAnnotations, classes: list[str] | None, ignore: set[str]) -> RegionAnnotations:
        ignored = dict(parsed.ignored)
        merged = {}
        for name, geom in parsed.merged.items():
            if name in ignore or (classes is not None and name not in classes):
                ignored[f"class {name!r} not used"] = parsed.counts[name]
            else:
                merged[name] = geom
        if not merged:
            raise InputError(parsed.path, "no polygon annotations" + (" of the requested classes" if classes else ""))
        if classes is None:
            classes = sorted(merged, key=lambda n: (-merged[n].area, n))
        geometries = []
        later = shapely.Polygon()
        for name in reversed(classes):
            geom = merged.get(name, shapely.Polygon())
            geometries.append(geom.difference(later) if not later.is_empty else geom)
            later = later.union(geom)
        geometries.reverse()
        return cls(path=parsed.path, classes=list(classes), geometries=geometries, ignored=ignored,
                   areas={name: float(g.area) for name, g in merged.items()})

    def bounds(self) -> tuple[float, float, float, float]:
        return unary_union(self.geometries).bounds

    def check_inside(self, width: int, height: int) -> None:
        """`InputError` when no annotation overlaps the slide (wrong file, or coordinates not in level-0 pixels)."""
        union = unary_union(self.geometries)
        if not union.intersects(shapely.box(0, 0, width, height)):
            x0, y0, x1, y1 = union.bounds
            raise InputError(self.path, f"annotations lie outside the slide (bounds {x0:.0f},{y0:.0f}-{x1:.0f},{y1:.0f}"
                                        f" vs slide {width}x{height} px)")

    def label_tiles(self, xs: np.ndarray, ys: np.ndarray, size: float, mode: str) -> np.ndarray:
        """Label per level-0 square tile (top-left xs, ys; side `size`): class index, or -1 when unannotated.

        mode 'centre': the class containing the tile centre; 'area': the class covering most of the tile.
        """
        labels = np.full(len(xs), -1, dtype=np.int64)
        if mode == "centre":
            cx, cy = xs + size / 2, ys + size / 2
            for k, geom in enumerate(self.geometries):
                if not geom.is_empty:
                    labels[shapely.contains_xy(geom, cx, cy)] = k
            return labels
        if mode != "area":
            raise ValueError(f"unknown label mode {mode!r}")
        boxes = shapely.box(xs, ys, xs + size, ys + size)
        best = np.zeros(len(xs))
        for k, geom in enumerate(self.geometries):
            if geom.is_empty:
                continue
            shapely.prepare(geom)
            hit = shapely.intersects(geom, boxes)
            if not hit.any():
                continue
            area = np.zeros(len(xs))
            area[hit] = shapely.area(shapely.intersection(boxes[hit], geom))
            better = area > best
            labels[better], best[better] = k, area[better]
        return labels


def load_points(path: Path) -> np.ndarray:
    """Cell-detection points (level-0 px) as an (n, 2) float array, from CSV (columns x,y) or GeoJSON Points."""
    if path.suffix.lower() in (".json", ".geojson"):
        coords = []
        for i, feat in enumerate(_load_features(path)):
            geom = _geometry(feat, path, i)
            if geom.geom_type == "Point":
                coords.append((geom.x, geom.y))
            elif geom.geom_type == "MultiPoint":
                coords += [(p.x, p.y) for p in geom.geoms]
        if not coords:
            raise InputError(path, "no point annotations")
        return np.asarray(coords, dtype=np.float64)
    try:
        with warnings.catch_warnings():
            # A row longer than the header: pandas would silently take its first field as the row label and shift
            # the coordinates (x,y header, row 1,2,3 -> (2, 3)); as an error it names the file instead.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(path, index_col=False)
    except pd.errors.ParserWarning:
        raise InputError(path, "a row has more fields than the header") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a readable CSV ({clip(str(exc), 100)})") from None
    cols = {c.lower().strip(): c for c in table.columns}
    if "x" not in cols or "y" not in cols:
        raise InputError(path, "points CSV needs columns x and y")
    xy = table[[cols["x"], cols["y"]]].apply(pd.to_numeric, errors="coerce")
    bad = xy.isna().any(axis=1).to_numpy()
    if bad.any():  # a typo would otherwise lose a detection without a word
        raise InputError(path, f"x, y on line {int(np.flatnonzero(bad)[0]) + 2} are not numbers")
    if len(xy) == 0:
        raise InputError(path, "no points")
    return xy.to_numpy(np.float64)
