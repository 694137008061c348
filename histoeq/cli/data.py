"""`histoeq extract`, `histoeq import`, `histoeq normalise`, `histoeq bench extract`: parse, call one library
function, print."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from histoeq.cli import app, bench_app
from histoeq.progress import ProgressFn

_EXTRACT_EPILOG = """\
[bold]Examples[/bold]

  # IDC slides with their GeoJSON (<slide stem>.geojson in the folder); patches on the 50 px grid starting at (1, 1)
  histoeq extract ../shared/data/idc/slides/*.tiff --annotations ../shared/data/idc/slides --out idc-slides \\
      --patch-size 50 --mpp 4.0 --stride 50 --min-tissue 0 --origin 1,1

  # an SVS at 0.5 µm/px, 224 px tiles over tissue, labelled by majority area, ignoring "Other"
  histoeq extract slide.svs --annotations slide.geojson --out ds --patch-size 224 --mpp 0.5 --stride 224 \\
      --label-from area --ignore Other

  # cell detections: positives centred on points, negatives at random tissue spots >= 64 px away
  histoeq extract slide.svs --points detections.csv --out mitoses --patch-size 64 --mpp 0.25 --neg-distance 64
"""

_IMPORT_EPILOG = """\
[bold]Examples[/bold]

  # the IDC/Kaggle patches (labels.csv: path,label_idc,patient_id,split); edge crops skipped and counted
  histoeq import ../shared/data/idc --out idc

  # pad the odd-sized edge crops with white instead of skipping them
  histoeq import ../shared/data/idc --out idc-padded --pad

  # ImageFolder (<class>/*.png) or PCam (camelyonpatch_level_2_split_*_{x,y}.h5; needs pip install 'histoeq\\[pcam]')
  histoeq import my_patches/ --out my_ds
"""

_BENCH_EPILOG = """\
[bold]Example[/bold]

  histoeq bench extract ../shared/data/idc/slides/8975.tiff --annotations ../shared/data/idc/slides \\
      --min-tissue 0 --origin 1,1
"""


@contextmanager
def _progress() -> Iterator[ProgressFn]:
    """A transient rich bar (nothing on a non-terminal stderr, see rich_progress)."""
    from histoeq.cli._render import rich_progress

    with rich_progress(transient=True) as progress:
        yield progress


def _csv(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _origin(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = _csv(text)
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise typer.BadParameter(f"expected X,Y integers, got {text!r}") from None
    return x, y


def _options(patch_size: int, mpp: float, stride: int | None, min_tissue: float, label_from: str,
             classes: str | None, ignore: str | None, origin: str | None, slide_mpp: float | None, split: str,
             neg_distance: float | None, neg_ratio: float, seed: int, workers: int):
    from histoeq.data.extract import ExtractOptions

    return ExtractOptions(patch_size=patch_size, mpp=mpp, stride=stride, min_tissue=min_tissue,
                          label_from=label_from, classes=_csv(classes) or None, ignore=set(_csv(ignore)),
                          origin=_origin(origin), slide_mpp=slide_mpp, split=split, neg_distance=neg_distance,
                          neg_ratio=neg_ratio, seed=seed, workers=workers)


@app.command("extract", epilog=_EXTRACT_EPILOG)
def extract_command(
    slides: list[Path] = typer.Argument(..., help="Slides: SVS, NDPI, MRXS, SCN, (OME-)TIFF, PNG/JPEG."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to create (written atomically)."),
    annotations: Path = typer.Option(None, "--annotations", help="GeoJSON file, or a folder of <slide stem>.geojson."),
    points: Path = typer.Option(None, "--points", help="Cell points: CSV (x,y) or GeoJSON, file or folder per slide."),
    patch_size: int = typer.Option(50, "--patch-size", help="Patch side in output pixels."),
    mpp: float = typer.Option(4.0, "--mpp", help="Output scale in µm/px."),
    stride: int = typer.Option(None, "--stride", help="Grid step in output pixels (default: the patch size)."),
    min_tissue: float = typer.Option(0.5, "--min-tissue", help="Keep tiles whose tissue fraction is at least this "
                                     "(0 keeps every tile, no tissue mask)."),
    label_from: str = typer.Option("centre", "--label-from", help="centre: class at the tile centre; area: class "
                                   "covering most of the tile."),
    classes: str = typer.Option(None, "--classes", help="Comma-separated classes, label 0 first; later ones win "
                                "overlaps (default: by annotated area, largest first)."),
    ignore: str = typer.Option(None, "--ignore", help="Comma-separated classes to leave out."),
    origin: str = typer.Option(None, "--origin", help="Anchor the grid's first tile at level-0 X,Y (e.g. 1,1 for the "
                               "IDC patches) instead of centring the grid on the slide."),
    slide_mpp: float = typer.Option(None, "--slide-mpp", help="Level-0 µm/px of the slides when metadata lacks it "
                                    "(or is wrong)."),
    split: str = typer.Option("", "--split", help="Mark all patches train, val or test (default: no split)."),
    neg_distance: float = typer.Option(None, "--neg-distance", help="Points mode: negatives at least this many "
                                       "output px from any point (default: the patch size)."),
    neg_ratio: float = typer.Option(1.0, "--neg-ratio", help="Points mode: negatives per positive."),
    seed: int = typer.Option(0, "--seed", help="Points mode: seed of the negative sampling."),
    workers: int = typer.Option(2, "--workers", help="Reader threads."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset at --out."),
) -> None:
    """Cut a labelled patch dataset out of whole slides (grid over tissue, GeoJSON or point labels)."""
    from histoeq.cli._render import console, print_table
    from histoeq.data.extract import extract_dataset

    opts = _options(patch_size, mpp, stride, min_tissue, label_from, classes, ignore, origin, slide_mpp, split,
                    neg_distance, neg_ratio, seed, workers)
    with _progress() as progress:
        result = extract_dataset(slides, out, annotations=annotations, points=points, options=opts,
                                 overwrite=force, progress=progress)
    print_table(f"histoeq extract: {out}", ["Slide", "Backend", "Tiles", *result["classes"]],
                [[s["slide"], s["backend"], s["tiles"], *(s[c] for c in result["classes"])]
                 for s in result["slides"]] + [["total", "", result["n"],
                                                *(result["counts"][c] for c in result["classes"])]])
    skipped = ", ".join(f"{reason}: {n}" for reason, n in result["skipped"].items()) or "none"
    console.print(f"skipped: {skipped}")
    if result["ignored_features"]:
        ignored = ", ".join(f"{reason}: {n}" for reason, n in result["ignored_features"].items())
        console.print(f"annotation features not used: {ignored}")
    for slide in result["empty_slides"]:
        console.print(f"no tiles kept on {slide}")
    console.print(f"{result['n']} patches in {result['seconds']:.1f} s ({result['tiles_per_s']:.0f} tiles/s)")


@app.command("import", epilog=_IMPORT_EPILOG)
def import_command(
    folder: Path = typer.Argument(..., help="labels.csv layout, <patient>/<class>/ or <class>/ folders, or PCam."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to create (written atomically)."),
    pad: bool = typer.Option(False, "--pad", help="Pad odd-sized patches with white instead of skipping them."),
    workers: int = typer.Option(2, "--workers", help="Decoder threads."),
    mpp: float = typer.Option(None, "--mpp", help="µm/px of the patches, recorded in meta.json (default: IDC 4.0, "
                              "PCam 0.972, else unknown)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset at --out."),
) -> None:
    """Import a folder of patches into the histoeq dataset format."""
    from histoeq.cli._render import console, print_table
    from histoeq.data.importers import import_folder

    with _progress() as progress:
        result = import_folder(folder, out, pad=pad, overwrite=force, workers=workers, mpp=mpp, progress=progress)
    classes = result["classes"]
    rows = [[split, *(counts.get(c, 0) for c in classes), sum(counts.values())]
            for split, counts in sorted(result["split_counts"].items())]
    rows.append(["total", *(result["counts"][c] for c in classes), result["n"]])
    print_table(f"histoeq import: {out} ({result['layout']}, {result['tile_px']} px)", ["Split", *classes, "All"],
                rows)
    skipped = ", ".join(f"{reason}: {n}" for reason, n in result["skipped"].items()) or "none"
    console.print(f"skipped: {skipped}" + (f"; padded: {result['padded']}" if result["padded"] else ""))
    console.print(f"{result['n']} patches in {result['seconds']:.1f} s ({result['images_per_s']:.0f} images/s)")


@app.command("normalise")
def normalise_command(
    data: Path = typer.Argument(..., help="Dataset folder (histoeq import / extract)."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to create (written atomically)."),
    method: str = typer.Option("macenko", "--method", help="macenko (H&E vectors and intensities), "
                               "macenko-vectors (H&E hues only) or reinhard-lab (L*a*b* mean and sd)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset at --out."),
) -> None:
    """Copy a dataset with each patient's stain normalised to a reference made from the training patients."""
    from histoeq.cli._render import console
    from histoeq.data.stain import normalise_dataset

    with _progress() as progress:
        result = normalise_dataset(data, out, method=method, overwrite=force, progress=progress)
    ref = ", ".join(f"{k} {v}" for k, v in result["reference"].items() if k != "pixels")
    console.print(f"{result['n']} patches of {result['patients']} patients normalised ({result['method']}) to {ref}")
    if result["unchanged"]:
        console.print(f"too little tissue, copied unchanged: {', '.join(result['unchanged'])}")


@bench_app.command("extract", epilog=_BENCH_EPILOG)
def bench_extract_command(
    slide: Path = typer.Argument(..., help="One slide OpenSlide can read."),
    annotations: Path = typer.Option(None, "--annotations", help="GeoJSON file or folder (optional)."),
    patch_size: int = typer.Option(50, "--patch-size"),
    mpp: float = typer.Option(4.0, "--mpp"),
    stride: int = typer.Option(None, "--stride"),
    min_tissue: float = typer.Option(0.5, "--min-tissue"),
    label_from: str = typer.Option("centre", "--label-from"),
    origin: str = typer.Option(None, "--origin", help="Level-0 X,Y of the grid's first tile [default: centred grid]."),
    slide_mpp: float = typer.Option(None, "--slide-mpp"),
    workers: int = typer.Option(2, "--workers"),
    repeats: int = typer.Option(3, "--repeats", help="Runs of each side (interleaved); the fastest of each counts."),
) -> None:
    """Extraction throughput vs OpenSlide read-only throughput of the same tiles (one read_region per tile)."""
    from histoeq.cli._render import console, print_table
    from histoeq.data.bench import bench_extract

    opts = _options(patch_size, mpp, stride, min_tissue, label_from, None, None, origin, slide_mpp, "", None, 1.0,
                    0, workers)
    with _progress() as progress:
        r = bench_extract(slide, annotations, opts, repeats=repeats, progress=progress)
    extracted = "" if r["extracted"] == r["tiles"] else f", {r['extracted']} extracted"
    print_table(f"histoeq bench extract: {slide.name} ({r['tiles']} tiles{extracted}, level {r['level']}, "
                f"{'resampled' if r['resampled'] else 'native scale'}, best of {r['repeats']})",
                ["What", "Seconds", "Tiles/s"],
                [["openslide read_region only", r["openslide_read_s"], r["openslide_tiles_per_s"]],
                 ["histoeq extract (all steps)", r["extract_s"], r["extract_tiles_per_s"]]])
    console.print(f"ratio extract / read-only: {r['ratio']:.2f}")
