"""Cut labelled patches out of whole slides into a dataset (`histoeq extract`).

Grid mode: tiles of `patch_size` output px at `mpp` µm/px every `stride` output px, anchored at level-0 `origin`
(default (0, 0), so tiles fall on multiples of the stride), kept where the thumbnail tissue mask covers at least
`min_tissue` of the tile, labelled from GeoJSON polygons by tile centre or by majority area.
Points mode: patches centred on cell-detection points are positive; random tissue points at least `neg_distance`
from every detection are negative.

Pixels are read in square blocks of up to 8 x 8 neighbouring grid tiles (one region read and at most one
resampling per block, then sliced), by a small thread pool (the decoders release the GIL). One read per block
instead of per tile, plus tifffile decoding for plain TIFF pyramids (see `histoeq.slide.backends`), is what keeps
the whole extraction at least as fast as OpenSlide reading the same tiles alone (`histoeq bench extract`).
The IDC slides' patches start at level-0 (1, 1) (file name x1451 = pixel column 1451), so reproducing them needs
``origin=(1, 1)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histoeq.data.annotations import RegionAnnotations, find_for_slide, load_points
from histoeq.data.dataset import DatasetWriter
from histoeq.errors import InputError
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide import Slide, open_slide
from histoeq.slide.tissue import no_tissue_reason, tissue_fraction, tissue_mask

GEOJSON_SUFFIXES = (".geojson", ".json")
POINT_SUFFIXES = (".csv", ".geojson", ".json")
KEEP_OPEN = 16  # slides kept open between the check pass and the extraction pass (file handles are finite)
BLOCK = 8  # grid tiles per block side: one region read serves up to 64 tiles
MIN_DOWNSAMPLE = 0.25  # reading finer than the scan by more than 4x invents pixels: a wrong --mpp, not a request
MAX_TILES = 100_000_000  # grid positions of one slide; beyond this the coordinate arrays alone need GiBs


@dataclass
class ExtractOptions:
    """How to cut patches; output sizes in output px (at `mpp`), `origin` in level-0 px."""

    patch_size: int = 50
    mpp: float = 4.0
    stride: int | None = None  # None: the patch size (tiles side by side)
    min_tissue: float = 0.5
    label_from: str = "centre"  # or "area"
    classes: list[str] | None = None  # label order; later classes win overlaps; None: by area
    ignore: set[str] = field(default_factory=set)
    origin: tuple[int, int] = (0, 0)
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
    """Tiles chosen on one slide: level-0 top-left corners (float, exact), labels, and the scale."""

    slide: Slide
    xs: np.ndarray
    ys: np.ndarray
    labels: np.ndarray
    downsample: float  # output px -> level-0 px
    grid: bool
    skipped: dict[str, int]


def _count(d: dict[str, int], key: str, n: int) -> None:
    if n:
        d[key] = d.get(key, 0) + int(n)


def tissue_of(slide: Slide, tile0: float) -> tuple[np.ndarray, float]:
    """Tissue mask on a thumbnail fine enough that a tile spans about 8 mask pixels (capped at 4096 px)."""
    w, h = slide.dimensions
    max_size = int(min(4096, max(64, math.ceil(max(w, h) / max(1.0, tile0 / 8)))))
    thumb, ds = slide.thumbnail(max_size)
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
    tile0, stride0 = opts.patch_size * ds, opts.stride * ds
    w, h = slide.dimensions
    ox, oy = opts.origin
    cols, rows = max(0, math.ceil((w - ox) / stride0)), max(0, math.ceil((h - oy) / stride0))
    if cols * rows > MAX_TILES:
        raise InputError(slide.path, f"{cols * rows:,} grid positions at --mpp {opts.mpp:g} and --stride "
                                     f"{opts.stride}, more than {MAX_TILES:,} (is the µm/px right?)")
    gx = ox + stride0 * np.arange(cols)
    gy = oy + stride0 * np.arange(rows)
    ys, xs = (a.ravel() for a in np.meshgrid(gy, gx, indexing="ij"))
    skipped: dict[str, int] = {}
    if opts.min_tissue > 0:
        mask, mask_ds = tissue_of(slide, tile0)
        frac = tissue_fraction(mask, mask_ds, np.stack([xs, ys, np.full_like(xs, tile0), np.full_like(xs, tile0)], 1))
        keep = frac >= opts.min_tissue
        _count(skipped, f"tissue below {opts.min_tissue:g}", (~keep).sum())
        xs, ys = xs[keep], ys[keep]
    if regions is not None:
        labels = regions.label_tiles(xs, ys, tile0, "area" if opts.label_from == "area" else "centre")
        keep = labels >= 0
        _count(skipped, "outside annotations", (~keep).sum())
        xs, ys, labels = xs[keep], ys[keep], labels[keep]
    else:
        labels = np.zeros(len(xs), np.int64)
    return TilePlan(slide, xs, ys, labels, ds, True, skipped)


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
    return TilePlan(slide, centres[:, 0] - tile0 / 2, centres[:, 1] - tile0 / 2, labels, ds, False, skipped)


def _blocks(plan: TilePlan, opts: ExtractOptions) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Grid tiles grouped into square blocks of up to BLOCK x BLOCK neighbours (one region read each).

    Returns (tile indices, column offsets, row offsets) per block, offsets in grid steps from the block's
    top-left. Points-mode tiles are read one by one.
    """
    if len(plan.xs) == 0:
        return []
    if not plan.grid:
        zero = np.zeros(1, np.int64)
        return [(np.array([i]), zero, zero) for i in range(len(plan.xs))]
    stride0 = opts.stride * plan.downsample
    col = np.rint((plan.xs - opts.origin[0]) / stride0).astype(np.int64)
    row = np.rint((plan.ys - opts.origin[1]) / stride0).astype(np.int64)
    key = (row // BLOCK) * (col.max(initial=0) // BLOCK + 1) + col // BLOCK
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    out = []
    for idx in np.split(order, bounds):
        c, r = col[idx], row[idx]
        out.append((idx, c - c.min(), r - r.min()))
    return out


def read_plan(plan: TilePlan, opts: ExtractOptions) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (tile indices, uint8 tiles) block by block, in order, reading with a thread pool."""
    p, s = opts.patch_size, opts.stride

    def read(block: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        idx, dc, dr = block
        # Top-left of the block's bounding box in level-0 px (grid tiles: exact multiples of the stride).
        x0 = plan.xs[idx].min() if plan.grid else plan.xs[idx[0]]
        y0 = plan.ys[idx].min() if plan.grid else plan.ys[idx[0]]
        size = (p + int(dc.max()) * s, p + int(dr.max()) * s)
        region = plan.slide.read_region_at((int(round(x0)), int(round(y0))), size, plan.downsample)
        tiles = np.stack([region[r * s:r * s + p, c * s:c * s + p] for c, r in zip(dc, dr)])
        return idx, tiles

    blocks = _blocks(plan, opts)
    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        # Bounded look-ahead so memory stays small on big slides.
        window = 4 * max(1, opts.workers)
        futures = [pool.submit(read, b) for b in blocks[:window]]
        nxt = window
        while futures:
            block, tiles = futures.pop(0).result()
            if nxt < len(blocks):
                futures.append(pool.submit(read, blocks[nxt]))
                nxt += 1
            yield block, tiles


def _class_order(paths: list[Path], opts: ExtractOptions) -> list[str]:
    """All class names over all slides, largest total area first (label 0), unless given.

    A name in --classes or --ignore that no annotation file has is a typo (it would make an empty class, or keep
    the class meant to be left out), so it is an error listing the names there are."""
    areas: dict[str, float] = {}
    for path in paths:
        for name, area in RegionAnnotations.load(path, None, set()).areas.items():
            areas[name] = areas.get(name, 0.0) + area
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
    if annotations is not None:
        classes = _class_order([p for p in ann_paths if p is not None], opts)
    elif points is not None:
        classes = ["negative", "positive"]
    else:
        classes = ["tissue"]

    # Cheap checks of every slide first (opens, has a resolution, annotations parse and overlap), so a bad file
    # late in the list fails in seconds, before any pixel is read. Each slide is then planned and read in turn, so
    # only one slide's decoded pixels are in memory at a time; the first KEEP_OPEN stay open in between.
    kept_open: dict[int, Slide] = {}
    regions_of: dict[int, RegionAnnotations] = {}
    try:
        for number, (slide_path, ann) in enumerate(zip(slides, ann_paths)):
            slide = open_slide(slide_path, mpp=opts.slide_mpp, mpp_option="--slide-mpp")
            kept_open[number] = slide
            slide.mpp  # noqa: B018  (no µm/px in metadata nor --slide-mpp: the InputError naming it comes here)
            if points is not None:
                load_points(ann)
            elif ann is not None:
                regions_of[number] = RegionAnnotations.load(ann, classes, opts.ignore)
                regions_of[number].check_inside(*slide.dimensions)
            if number >= KEEP_OPEN:
                kept_open.pop(number).close()
                regions_of.pop(number, None)
        return _extract_checked(slides, ann_paths, points, classes, kept_open, regions_of, out, opts, overwrite,
                                progress, start)
    finally:
        for slide in kept_open.values():
            slide.close()


def _extract_checked(slides: list[Path], ann_paths: list[Path | None], points: Path | None, classes: list[str],
                     kept_open: dict[int, Slide], regions_of: dict[int, RegionAnnotations], out: Path,
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
            slide = kept_open.pop(number, None) or open_slide(slide_path, mpp=opts.slide_mpp,
                                                              mpp_option="--slide-mpp")
            with slide:
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
    return (f"the grid from --origin {opts.origin[0]},{opts.origin[1]} does not reach into the {w}x{h} px slide")
