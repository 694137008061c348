"""Cut labelled patches out of whole slides into a dataset (`histoeq extract`).

Grid mode: tiles of `patch_size` output px at `mpp` µm/px every `stride` output px on the grid of
`histoeq.slide.tiler`: centred on the slide (so a rotated slide gives the rotated tile set), or anchored at level-0
`origin` when one is given; kept where the thumbnail tissue mask covers at least `min_tissue` of the tile, labelled
from GeoJSON polygons by tile centre or by majority area.
Points mode: patches centred on cell-detection points are positive; random tissue points at least `neg_distance`
from every detection are negative.

Grid tiles are read by the tiler's block reader (one region read and at most one resampling per block of up to
8 x 8 neighbouring tiles, in a small thread pool); together with tifffile decoding for plain TIFF pyramids (see
`histoeq.slide.backends`) this keeps the whole extraction at least as fast as OpenSlide reading the same tiles alone
(`histoeq bench extract`). The IDC slides' patches start at level-0 (1, 1) (file name x1451 = pixel column 1451), so
reproducing them needs ``origin=(1, 1)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histoeq.data.annotations import (
    ParsedAnnotations,
    RegionAnnotations,
    find_for_slide,
    load_points,
    parse_annotations,
)
from histoeq.data.dataset import DatasetWriter
from histoeq.errors import InputError, warn_input
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide import Slide, open_slide
from histoeq.slide.kept import KEEP_OPEN, KeptOpen
from histoeq.slide.reader import mpp_override_problem
from histoeq.slide.tiler import TileGrid, iter_blocks, ordered_map, tile_grid
from histoeq.slide.tissue import no_tissue_reason, tissue_fraction, tissue_mask

GEOJSON_SUFFIXES = (".geojson", ".json")
POINT_SUFFIXES = (".csv", ".geojson", ".json")
MIN_DOWNSAMPLE = 0.25  # reading finer than the scan by more than 4x invents pixels: a wrong --mpp, not a request


@dataclass
class ExtractOptions:
    """How to cut patches; output sizes in output px (at `mpp`), `origin` in level-0 px (None: centred grid)."""

    patch_size: int = 50
    mpp: float = 4.0
    stride: int | None = None  # None: the patch size (tiles side by side)
    min_tissue: float = 0.5
    label_from: str = "centre"  # or "area"
    classes: list[str] | None = None  # label order; later classes win overlaps; None: by area
    ignore: set[str] = field(default_factory=set)
    origin: tuple[int, int] | None = None
    slide_mpp: float | None = None  # override the slides' metadata resolution
    split: str = ""
    neg_distance: float | None = None  # points mode, output px; default: patch_size
    neg_ratio: float = 1.0
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.stride is None:
            self.stride = self.patch_size

    def check(self) -> None:
        if self.patch_size < 1 or self.stride < 1:
            raise InputError(None, f"--patch-size and --stride must be at least 1, got {self.patch_size} and "
                                   f"{self.stride}")
        if self.workers < 1:
            raise InputError(None, f"--workers must be at least 1, got {self.workers}")
        if not (self.neg_ratio >= 0 and math.isfinite(self.neg_ratio)):
            raise InputError(None, f"--neg-ratio must be a number >= 0, got {self.neg_ratio}")
        if self.neg_distance is not None and not (self.neg_distance >= 0 and math.isfinite(self.neg_distance)):
            raise InputError(None, f"--neg-distance must be a number >= 0, got {self.neg_distance}")
        if not (self.mpp > 0 and math.isfinite(self.mpp)):
            raise InputError(None, f"--mpp must be positive, got {self.mpp}")
        if not 0 <= self.min_tissue <= 1:
            raise InputError(None, f"--min-tissue must be in [0, 1], got {self.min_tissue}")
        if self.label_from not in ("centre", "center", "area"):
            raise InputError(None, f"--label-from must be centre or area, got {self.label_from!r}")
        if self.split not in ("", "train", "val", "test"):
            raise InputError(None, f"--split must be train, val or test, got {self.split!r}")
        if self.classes is not None:
            twice = sorted({c for c in self.classes if self.classes.count(c) > 1})
            if twice:
                raise InputError(None, f"--classes names {', '.join(twice)} more than once")
            both = sorted(set(self.classes) & self.ignore)
            if both:
                raise InputError(None, f"{', '.join(both)} is in both --classes and --ignore")


@dataclass
class TilePlan:
    """Tiles chosen on one slide: level-0 top-left corners where their pixels are read, labels, and the scale.

    Grid mode also has the `grid` and the kept cells (`keep`, rows x cols); the tiles are then in the grid's
    row-major order."""

    slide: Slide
    xs: np.ndarray
    ys: np.ndarray
    labels: np.ndarray
    downsample: float  # output px -> level-0 px
    skipped: dict[str, int]
    grid: TileGrid | None = None
    keep: np.ndarray | None = None


ParsedOf = Callable[[Path], ParsedAnnotations]


def _count(d: dict[str, int], key: str, n: int) -> None:
    if n:
        d[key] = d.get(key, 0) + int(n)


def tissue_of(slide: Slide, tile0: float) -> tuple[np.ndarray, float]:
    """Tissue mask on a reduced slide fine enough that a tile spans at least 8 mask pixels (the image is capped at
    4096 px); the same for the same pixels with or without a pyramid (`Slide.tissue_thumbnail`, which halves until
    the slide fits, so it is asked for twice the size needed)."""
    w, h = slide.dimensions
    max_size = int(min(4096, max(64, math.ceil(max(w, h) / max(1.0, tile0 / 8)))))
    thumb, ds = slide.tissue_thumbnail(min(4096, 2 * max_size))
    mask = tissue_mask(thumb)
    if not mask.any():
        raise InputError(slide.path, f"no tissue found ({no_tissue_reason(thumb)})")
    return mask, ds


def _downsample(slide: Slide, opts: ExtractOptions) -> float:
    """Level-0 pixels per output pixel; refusing a large upsampling (e.g. mm typed for µm: billions of invented
    pixels and a full disk, with no error)."""
    ds = opts.mpp / slide.mpp
    if ds < MIN_DOWNSAMPLE:
        raise InputError(slide.path, f"--mpp {opts.mpp:g} would upsample this {slide.mpp:g} µm/px slide "
                                     f"{1 / ds:.3g}x (at most {1 / MIN_DOWNSAMPLE:g}x; is --mpp in µm/px?)")
    return ds


def plan_grid(slide: Slide, regions: RegionAnnotations | None, opts: ExtractOptions) -> TilePlan:
    ds = _downsample(slide, opts)
    grid = tile_grid(slide.dimensions, slide.mpp, opts.mpp, opts.patch_size, opts.stride, slide.path,
                     origin=opts.origin, allow_empty=True)
    rects = grid.rects()
    keep = np.ones(grid.count, dtype=bool)
    skipped: dict[str, int] = {}
    if opts.min_tissue > 0 and grid.count:
        mask, mask_ds = tissue_of(slide, grid.footprint)
        keep = tissue_fraction(mask, mask_ds, rects) >= opts.min_tissue
        _count(skipped, f"tissue below {opts.min_tissue:g}", (~keep).sum())
    kept = np.flatnonzero(keep)
    if regions is not None:
        labels = regions.label_tiles(rects[kept, 0], rects[kept, 1], grid.footprint,
                                     "area" if opts.label_from == "area" else "centre")
        _count(skipped, "outside annotations", (labels < 0).sum())
        keep[kept[labels < 0]] = False
        kept, labels = kept[labels >= 0], labels[labels >= 0]
    else:
        labels = np.zeros(len(kept), np.int64)
    xs, ys = grid.top_left_of(kept)
    return TilePlan(slide, xs, ys, labels, ds, skipped, grid, keep.reshape(grid.rows, grid.cols))


def plan_points(slide: Slide, points: np.ndarray, opts: ExtractOptions) -> TilePlan:
    """Positives centred on `points`; as many * neg_ratio negatives at random tissue spots away from them."""
    from scipy.spatial import cKDTree

    ds = _downsample(slide, opts)
    tile0 = opts.patch_size * ds
    w, h = slide.dimensions
    inside = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    skipped: dict[str, int] = {}
    _count(skipped, "point outside the slide", (~inside).sum())
    pos = points[inside]
    if len(pos) == 0:
        raise InputError(slide.path, "no detection points lie on this slide")
    mask, mask_ds = tissue_of(slide, tile0)
    rng = np.random.default_rng(opts.seed)
    n_neg = int(round(opts.neg_ratio * len(pos)))
    min_dist0 = (opts.neg_distance if opts.neg_distance is not None else opts.patch_size) * ds
    tree = cKDTree(pos)
    cells = np.argwhere(mask)
    negatives = np.zeros((0, 2))
    for _ in range(20):  # rejection sampling; a few rounds are plenty unless tissue is saturated with points
        if len(negatives) >= n_neg:
            break
        pick = cells[rng.integers(0, len(cells), size=4 * max(n_neg, 16))]
        cand = (pick[:, ::-1] + rng.random((len(pick), 2))) * mask_ds
        dist, _ = tree.query(cand)
        negatives = np.concatenate([negatives, cand[dist >= min_dist0]])[:n_neg]
    _count(skipped, "negatives not found (tissue too crowded)", n_neg - len(negatives))
    centres = np.concatenate([negatives, pos])
    labels = np.concatenate([np.zeros(len(negatives), np.int64), np.ones(len(pos), np.int64)])
    return TilePlan(slide, centres[:, 0] - tile0 / 2, centres[:, 1] - tile0 / 2, labels, ds, skipped)


def read_plan(plan: TilePlan, opts: ExtractOptions) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (tile numbers in the plan, uint8 tiles) in the plan's order, read by a thread pool: grid tiles block
    by block with the tiler's block reader, points-mode tiles one by one."""
    if plan.grid is not None:
        # Plan tile k is the k-th kept cell in row-major order; the block reader yields cell indices block by block.
        number = np.full(plan.grid.count, -1, np.int64)
        number[np.flatnonzero(plan.keep)] = np.arange(len(plan.xs))
        for indices, tiles in iter_blocks(plan.slide, plan.grid, plan.keep, workers=opts.workers):
            yield number[indices], tiles
        return
    p = opts.patch_size

    def read(i: int) -> tuple[np.ndarray, np.ndarray]:
        region = plan.slide.read_region_at((int(round(plan.xs[i])), int(round(plan.ys[i]))), (p, p), plan.downsample)
        return np.array([i]), region[None]

    yield from ordered_map(read, range(len(plan.xs)), opts.workers, 4 * max(1, opts.workers))


def _class_order(paths: list[Path], opts: ExtractOptions, parsed_of: ParsedOf) -> list[str]:
    """All class names over all slides, largest total area first (label 0), unless given.

    A name in --classes or --ignore that no annotation file has is a typo (it would make an empty class, or keep
    the class meant to be left out), so it is an error listing the names there are."""
    areas: dict[str, float] = {}
    for path in paths:
        for name, geom in parsed_of(path).merged.items():
            areas[name] = areas.get(name, 0.0) + float(geom.area)
    for option, names in (("--classes", opts.classes or []), ("--ignore", sorted(opts.ignore))):
        unknown = [n for n in names if n not in areas]
        if unknown:
            where = paths[0] if len(paths) == 1 else paths[0].parent
            raise InputError(where, f"{option} names {', '.join(map(repr, unknown))}, which no annotation has "
                                    f"(classes there: {', '.join(sorted(areas))})")
    if opts.classes:
        return list(opts.classes)
    return sorted((n for n in areas if n not in opts.ignore), key=lambda n: (-areas[n], n))


def extract_dataset(slides: list[Path], out: Path, annotations: Path | None = None, points: Path | None = None,
                    options: ExtractOptions | None = None, overwrite: bool = False,
                    progress: ProgressFn = null_progress) -> dict:
    """Extract patches from `slides` into dataset `out`; returns a summary (counts per class, skips, speed).

    Everything is checked (slides open, have a resolution, annotations parse and overlap) before pixels are read;
    the dataset is written atomically.
    """
    opts = options or ExtractOptions()
    opts.check()
    if annotations is not None and points is not None:
        raise InputError(points, "use either --annotations or --points, not both")
    slides = [Path(s) for s in slides]
    if not slides:
        raise InputError(None, "no slides given")
    start = time.perf_counter()
    # Pair every slide with its annotation file first, so a missing or bad file fails before any work.
    ann_paths: list[Path | None] = []
    for slide_path in slides:
        if annotations is not None:
            found = find_for_slide(Path(annotations), slide_path, GEOJSON_SUFFIXES)
            if found is None:
                raise InputError(annotations, f"no {slide_path.stem}.geojson for slide {slide_path.name}")
        elif points is not None:
            found = find_for_slide(Path(points), slide_path, POINT_SUFFIXES)
            if found is None:
                raise InputError(points, f"no {slide_path.stem}.csv/.geojson points for slide {slide_path.name}")
        else:
            found = None
        ann_paths.append(found)
    # Each GeoJSON file is parsed once (a 2M-vertex polygon takes minutes and GBs): the class order, the up-front
    # check and the extraction share it; only the first KEEP_OPEN files are kept parsed, so memory stays bounded,
    # and a file beyond them is parsed again when its slide's turn comes.
    parsed: dict[Path, ParsedAnnotations] = {}

    def parsed_of(path: Path) -> ParsedAnnotations:
        found = parsed.get(path)
        if found is None:
            found = parse_annotations(path)
            if len(parsed) < KEEP_OPEN:
                parsed[path] = found
        return found

    if annotations is not None:
        classes = _class_order([p for p in ann_paths if p is not None], opts, parsed_of)
    elif points is not None:
        classes = ["negative", "positive"]
    else:
        classes = ["tissue"]

    # Cheap checks of every slide first (opens, has a resolution, annotations parse and overlap), so a bad file
    # late in the list fails in seconds, before any pixel is read. Each slide is then planned and read in turn, so
    # only one slide's decoded pixels are in memory at a time; the first KEEP_OPEN stay open in between.
    regions_of: dict[int, RegionAnnotations] = {}

    def opener(path: Path) -> Slide:
        return open_slide(path, mpp=opts.slide_mpp, mpp_option="--slide-mpp")

    own_mpp: dict[Path, float | None] = {}  # each slide's µm/px in its file
    with KeptOpen(opener) as kept:
        for number, (slide_path, ann) in enumerate(zip(slides, ann_paths)):
            regions = kept.check(slide_path, lambda slide, ann=ann: _check_slide(slide, ann, points, classes, opts,
                                                                                 parsed_of, own_mpp))
            if regions is not None and number < KEEP_OPEN:
                regions_of[number] = regions
        parsed.clear()  # the kept slides' regions hold what extraction needs
        for slide_path in slides:  # after the checks: a refused run prints its error only
            problem = mpp_override_problem(opts.slide_mpp, own_mpp.get(slide_path), "--slide-mpp")
            if problem is not None:
                warn_input(slide_path, problem)
        return _extract_checked(slides, ann_paths, points, classes, kept, regions_of, out, opts, overwrite,
                                progress, start)


def _check_slide(slide: Slide, ann: Path | None, points: Path | None, classes: list[str],
                 opts: ExtractOptions, parsed_of: ParsedOf,
                 own_mpp: dict[Path, float | None]) -> RegionAnnotations | None:
    """The up-front check of one slide and its labels; returns its region annotations (grid mode with labels)."""
    slide.mpp  # noqa: B018  (no µm/px in metadata nor --slide-mpp: the InputError naming it comes here)
    own_mpp[slide.path] = slide.metadata_mpp
    if points is not None:
        load_points(ann)
        return None
    if ann is None:
        return None
    regions = RegionAnnotations.of(parsed_of(ann), classes, opts.ignore)
    regions.check_inside(*slide.dimensions)
    return regions


def _extract_checked(slides: list[Path], ann_paths: list[Path | None], points: Path | None, classes: list[str],
                     kept: KeptOpen, regions_of: dict[int, RegionAnnotations], out: Path,
                     opts: ExtractOptions, overwrite: bool, progress: ProgressFn, start: float) -> dict:
    """The extraction pass of `extract_dataset`, after every input was checked."""
    provenance = {"command": "extract", "slides": [str(s) for s in slides],
                  "annotations": [None if a is None else str(a) for a in ann_paths] if points is None else None,
                  "points": [str(a) for a in ann_paths] if points is not None else None,
                  "options": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(opts).items()}}
    per_slide = []
    empty: list[str] = []  # "slide (why)" for slides that gave no tile
    ignored_by_file: dict[str, dict[str, int]] = {}  # one entry per GeoJSON file, even when slides share it
    done = 0
    with DatasetWriter(out, tile_px=opts.patch_size, classes=classes, mpp=opts.mpp, provenance=provenance,
                       overwrite=overwrite) as writer:
        for number, (slide_path, ann) in enumerate(zip(slides, ann_paths)):
            progress("slides", number, len(slides), slide_path.name)
            with kept.take(slide_path) as slide:
                if points is not None:
                    plan = plan_points(slide, load_points(ann), opts)
                else:
                    regions = regions_of.pop(number, None)
                    if regions is None and ann is not None:
                        regions = RegionAnnotations.load(ann, classes, opts.ignore)
                    if regions is not None:
                        ignored_by_file[str(ann)] = regions.ignored
                    plan = plan_grid(slide, regions, opts)
                if len(plan.xs) == 0:
                    if len(slides) == 1:
                        raise InputError(slide_path, f"no tiles kept ({_why_empty(plan, opts)})")
                    empty.append(f"{slide_path.name} ({_why_empty(plan, opts)})")
                for reason, n in plan.skipped.items():
                    writer.skip(reason, n)
                name, in_slide = slide_path.stem, 0
                for block, tiles in read_plan(plan, opts):
                    rows = [{"label": int(plan.labels[i]), "patient": name, "slide": slide_path.name,
                             "x": int(round(plan.xs[i])), "y": int(round(plan.ys[i])), "mpp": opts.mpp,
                             "split": opts.split, "source": str(slide_path)} for i in block]
                    writer.add(tiles, rows)
                    done += len(block)
                    in_slide += len(block)
                    rate = done / max(time.perf_counter() - start, 1e-9)
                    progress("tiles", in_slide, len(plan.xs), f"{name} {rate:.0f} tiles/s")
                per_slide.append({"slide": slide_path.name, "backend": slide.backend, "vendor": slide.vendor,
                                  "tiles": int(len(plan.xs)),
                                  **{c: int((plan.labels == k).sum()) for k, c in enumerate(classes)}})
        if len(writer) == 0:
            raise InputError(None, f"no tiles kept on any slide: {'; '.join(empty)}")
        progress("slides", len(slides), len(slides), "")
    seconds = time.perf_counter() - start
    ignored: dict[str, int] = {}
    for counts in ignored_by_file.values():
        for reason, n in counts.items():
            ignored[reason] = ignored.get(reason, 0) + n
    return {"out": str(out), "classes": classes, "counts": writer.meta["class_counts"], "n": writer.meta["n"],
            "skipped": writer.meta["skipped"], "slides": per_slide, "empty_slides": empty,
            "ignored_features": ignored, "seconds": seconds, "tiles_per_s": writer.meta["n"] / max(seconds, 1e-9)}


def _why_empty(plan: TilePlan, opts: ExtractOptions) -> str:
    """Why a slide gave no tile, for the message: the skip counts, or a grid that misses the slide entirely."""
    if plan.skipped:
        return ", ".join(f"{reason}: {n}" for reason, n in plan.skipped.items())
    w, h = plan.slide.dimensions
    if opts.origin is not None:
        return f"the grid from --origin {opts.origin[0]},{opts.origin[1]} does not reach into the {w}x{h} px slide"
    footprint = plan.grid.footprint if plan.grid is not None else opts.patch_size * plan.downsample
    return (f"the {w}x{h} px slide is smaller than one {opts.patch_size} px tile at {opts.mpp:g} µm/px "
            f"({footprint:.4g} px square)")
