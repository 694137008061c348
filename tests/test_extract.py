"""`histoeq extract`: labels and pixels against the IDC ground truth, synthetic label rules, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from histoeq.data.dataset import PatchDataset
from tests.conftest import run_cli

FAST_SLIDES = ["8951", "9083"]  # the two smallest of the 7 IDC slides (613 + 571 tiles)
ALL_SLIDES = ["8918", "8951", "8975", "8984", "9036", "9083", "9124"]
PINK, PURPLE = (200, 100, 150), (120, 60, 160)


# ---------------------------------------------------------------- real data: IDC slides vs their patches
def _check_idc(idc_dir: Path, out: Path, patients: list[str]) -> None:
    ds = PatchDataset.open(out)
    assert ds.classes == ["Tissue", "IDC"] and ds.tile_px == 50 and ds.mpp == 4.0
    labels_csv = pd.read_csv(idc_dir / "labels.csv", dtype={"patient_id": str})
    for patient in patients:
        truth = pd.read_csv(idc_dir / "slides" / f"{patient}.tiles.csv")
        got = ds.index[ds.index["patient"] == patient]
        merged = truth.merge(got, on=["x", "y"], how="left")
        assert merged["label"].notna().mean() >= 0.99, f"{patient}: tiles missing"
        assert (merged["label"] == merged["label_idc"]).mean() >= 0.99, f"{patient}: labels differ"
        # pixels: the slide was assembled from these PNGs and JPEG-compressed, so they match up to JPEG error
        files = labels_csv[labels_csv["patient_id"] == patient]
        xy = files["path"].str.extract(r"_x(\d+)_y(\d+)_").astype(int)
        png_of = dict(zip(zip(xy[0], xy[1]), files["path"]))
        errors = []
        for row in got.itertuples():
            png = cv2.imread(str(idc_dir / png_of[(row.x, row.y)]))[:, :, ::-1].astype(int)
            tile = ds.images[row.id][: png.shape[0], : png.shape[1]].astype(int)
            errors.append(np.abs(tile - png).mean())
        errors = np.asarray(errors)
        assert np.median(errors) < 8 and np.quantile(errors, 0.99) < 15, (patient, np.median(errors), errors.max())


def _extract_idc(idc_dir: Path, tmp_path: Path, patients: list[str], capsys) -> Path:
    out = tmp_path / "idc-slides"
    slides = [idc_dir / "slides" / f"{p}.tiff" for p in patients]
    code, stdout, err = run_cli(["extract", *slides, "--annotations", idc_dir / "slides", "--out", out,
                                 "--patch-size", 50, "--mpp", 4.0, "--stride", 50, "--min-tissue", 0,
                                 "--origin", "1,1"], capsys)
    assert code == 0, err
    assert "IDC" in stdout and "tiles/s" in stdout
    return out


@pytest.mark.realdata
def test_idc_two_slides_match_ground_truth(idc_dir, tmp_path, capsys):
    _check_idc(idc_dir, _extract_idc(idc_dir, tmp_path, FAST_SLIDES, capsys), FAST_SLIDES)


@pytest.mark.realdata
@pytest.mark.slow
def test_idc_all_seven_slides_match_ground_truth(idc_dir, tmp_path, capsys):
    _check_idc(idc_dir, _extract_idc(idc_dir, tmp_path, ALL_SLIDES, capsys), ALL_SLIDES)


@pytest.mark.realdata
def test_idc_default_grid_is_centred_and_origin_anchors_it(idc_dir, tmp_path, capsys):
    """Default grid (centred, --min-tissue 0.5): half the leftover strip on each side, whole tiles only, all inside
    tissue; --origin 0,0 puts the tiles on multiples of the stride instead."""
    from histoeq.slide import open_slide

    slide = idc_dir / "slides" / "9124.tiff"
    with open_slide(slide) as s:
        width, height = s.dimensions
    offsets = [int(np.floor((side % 50) / 2 + 0.5)) for side in (width, height)]
    for origin, (ox, oy) in ((None, offsets), ("0,0", (0, 0))):
        out = tmp_path / f"ds-{origin}"
        code, _, err = run_cli(["extract", slide, "--annotations", idc_dir / "slides", "--out", out,
                                *(["--origin", origin] if origin else [])], capsys)
        assert code == 0, err
        ds = PatchDataset.open(out)
        index = ds.index
        assert ds.classes == ["Tissue", "IDC"]  # by raw annotated area, even where IDC is most of the tissue
        assert len(index) > 100 and (index["x"] % 50 == ox).all() and (index["y"] % 50 == oy).all(), origin
        assert (index["x"] + 50 <= width).all() and (index["y"] + 50 <= height).all()
    assert offsets != [0, 0]  # the two grids differ on this slide, so the check above tells them apart


# ---------------------------------------------------------------- synthetic slides: label rules, points
def _slide(path: Path, with_tissue: bool = True, mpp: float | None = 1.0) -> Path:
    """600x400 px, pink tissue in [100, 500) x [100, 300), a purple 'Tumour' block at [300, 400) x [100, 200)."""
    img = np.full((400, 600, 3), 250, np.uint8)
    if with_tissue:
        img[100:300, 100:500] = PINK
        img[100:200, 300:400] = PURPLE
    kw = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, img, tile=(128, 128), compression="zlib", **kw)
    return path


def _square(x0, y0, x1, y1):
    return [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]


def _geojson(path: Path, features: list[tuple[str, list]]) -> Path:
    feats = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": coords},
              "properties": {"objectType": "annotation", "classification": {"name": name}}}
             for name, coords in features]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


@pytest.fixture
def synthetic(tmp_path):
    slide = _slide(tmp_path / "s1.tiff")
    _geojson(tmp_path / "s1.geojson", [("Stroma", _square(100, 100, 500, 300)), ("Tumour", _square(310, 100, 400, 200)),
                                      ("Other", _square(0, 0, 50, 50))])
    return tmp_path, slide


def test_centre_and_area_labels(synthetic, capsys):
    folder, slide = synthetic
    for mode in ("centre", "area"):
        out = folder / f"ds-{mode}"
        code, _, err = run_cli(["extract", slide, "--annotations", folder, "--out", out, "--patch-size", 50,
                                "--mpp", 1.0, "--label-from", mode, "--ignore", "Other"], capsys)
        assert code == 0, err
        ds = PatchDataset.open(out)
        assert ds.classes == ["Stroma", "Tumour"]  # by area, largest first; Other ignored
        index = ds.index.set_index(["x", "y"])
        assert len(ds) == 8 * 4  # tissue [100, 500) x [100, 300) on a 50 px grid
        # tile (300, 100): Tumour covers [310, 350) of [300, 350): centre (325) is in, area is 80 %
        assert index.loc[(300, 100), "label"] == 1
        # tile (350, 150) is inside the Tumour square, (150, 150) is Stroma
        assert index.loc[(350, 150), "label"] == 1 and index.loc[(150, 150), "label"] == 0
        # tile (400, 100): Tumour ends at 400, so Stroma by both rules
        assert index.loc[(400, 100), "label"] == 0
        meta = ds.meta
        assert meta["provenance"]["options"]["label_from"] == mode and meta["normalisation"]["mean"]


def test_area_vs_centre_differ(tmp_path, capsys):
    slide = _slide(tmp_path / "s.tiff")
    # Tumour covers [100, 130) of tile [100, 150): 60 % area, but the centre (125) is inside too; shift it so the
    # centre is outside while the area is the majority: [100, 124)x[100,150) is 48 %, [100, 128) is 56 %.
    _geojson(tmp_path / "s.geojson", [("Stroma", _square(0, 0, 600, 400)), ("Tumour", _square(100, 100, 124, 150))])
    labels = {}
    for mode in ("centre", "area"):
        out = tmp_path / mode
        assert run_cli(["extract", slide, "--annotations", tmp_path / "s.geojson", "--out", out, "--mpp", 1.0,
                        "--label-from", mode, "--classes", "Stroma,Tumour"], capsys)[0] == 0
        index = PatchDataset.open(out).index.set_index(["x", "y"])
        labels[mode] = index.loc[(100, 100), "label"]
    assert labels == {"centre": 0, "area": 0}
    _geojson(tmp_path / "s.geojson", [("Stroma", _square(0, 0, 600, 400)), ("Tumour", _square(100, 100, 128, 150))])
    out = tmp_path / "area2"
    assert run_cli(["extract", slide, "--annotations", tmp_path / "s.geojson", "--out", out, "--mpp", 1.0,
                    "--label-from", "area", "--classes", "Stroma,Tumour"], capsys)[0] == 0
    assert PatchDataset.open(out).index.set_index(["x", "y"]).loc[(100, 100), "label"] == 1


def test_scale_and_grid_origin(synthetic, capsys):
    folder, slide = synthetic
    out = folder / "ds"
    code, _, err = run_cli(["extract", slide, "--annotations", folder / "s1.geojson", "--out", out,
                            "--patch-size", 25, "--mpp", 2.0, "--stride", 25, "--origin", "0,0"], capsys)
    assert code == 0, err
    ds = PatchDataset.open(out)
    assert ds.tile_px == 25 and ds.mpp == 2.0
    assert (ds.index["x"] % 50 == 0).all()  # 25 output px at 2 µm/px = 50 level-0 px at 1 µm/px
    tile = ds.images[ds.index.set_index(["x", "y"]).loc[(150, 150), "id"]]
    assert np.abs(tile.astype(int) - PINK).max() <= 2  # one resampling of a flat region


def test_points_mode(tmp_path, capsys):
    slide = _slide(tmp_path / "s.tiff")
    pd.DataFrame({"x": [150, 250, 450], "y": [150, 250, 150]}).to_csv(tmp_path / "s.csv", index=False)
    out = tmp_path / "ds"
    code, _, err = run_cli(["extract", slide, "--points", tmp_path, "--out", out, "--patch-size", 32, "--mpp", 1.0,
                            "--neg-distance", 40, "--neg-ratio", 2, "--seed", 3], capsys)
    assert code == 0, err
    ds = PatchDataset.open(out)
    assert ds.classes == ["negative", "positive"]
    pos, neg = ds.index[ds.index["label"] == 1], ds.index[ds.index["label"] == 0]
    assert sorted(zip(pos["x"] + 16, pos["y"] + 16)) == [(150, 150), (250, 250), (450, 150)]
    assert len(neg) == 6
    centres = np.stack([neg["x"] + 16, neg["y"] + 16], 1)
    points = np.array([[150, 150], [250, 250], [450, 150]])
    assert (np.linalg.norm(centres[:, None] - points[None], axis=2).min(1) >= 39).all()
    assert ((centres >= 90) & (centres <= 510)).all()  # on tissue


def test_points_geojson_and_unlabelled_tissue_grid(tmp_path, capsys):
    slide = _slide(tmp_path / "s.tiff")
    points = tmp_path / "cells.geojson"
    points.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[200, 200], [420, 250]]},
         "properties": {"classification": {"name": "Mitosis"}}}]}))
    out = tmp_path / "pts"
    code, _, err = run_cli(["extract", slide, "--points", points, "--out", out, "--patch-size", 20, "--mpp", 1.0],
                           capsys)
    assert code == 0, err
    ds = PatchDataset.open(out)
    assert int(ds.labels.sum()) == 2 and len(ds) == 4
    # no annotations at all: every tissue tile, one class
    out = tmp_path / "grid"
    assert run_cli(["extract", slide, "--out", out, "--mpp", 1.0, "--split", "test"], capsys)[0] == 0
    ds = PatchDataset.open(out)
    assert ds.classes == ["tissue"] and len(ds) == 32 and list(ds.split_ids("test")) == list(range(32))


# ---------------------------------------------------------------- bad inputs: exit 2, one line, nothing written
def _bad(tmp_path: Path, case: str) -> tuple[list, Path]:
    good = _slide(tmp_path / "good.tiff")
    geo = _geojson(tmp_path / "good.geojson", [("Tumour", _square(100, 100, 300, 300))])
    if case == "zero-byte":
        bad = tmp_path / "empty.svs"
        bad.write_bytes(b"")
        return [bad, "--annotations", geo], bad
    if case == "truncated-tiff":
        bad = tmp_path / "cut.tiff"
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return [bad, "--annotations", geo], bad
    if case == "text-svs":
        bad = tmp_path / "notes.svs"
        bad.write_text("this is not a slide\n")
        return [bad, "--annotations", geo], bad
    if case == "geojson-not-json":
        bad = tmp_path / "bad.geojson"
        bad.write_text("{not json")
        return [good, "--annotations", bad], bad
    if case == "geojson-no-polygons":
        bad = tmp_path / "points.geojson"
        bad.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 10]}, "properties": {}}]}))
        return [good, "--annotations", bad], bad
    if case == "geojson-outside":
        bad = _geojson(tmp_path / "far.geojson", [("Tumour", _square(5000, 5000, 6000, 6000))])
        return [good, "--annotations", bad], bad
    if case == "no-tissue":
        bad = _slide(tmp_path / "blank.tiff", with_tissue=False)
        return [bad, "--annotations", geo], bad
    if case == "no-mpp":
        bad = _slide(tmp_path / "nompp.tiff", mpp=None)
        return [bad, "--annotations", geo], bad
    if case == "missing-annotations":
        return [good, "--annotations", tmp_path / "nothing-here"], tmp_path / "nothing-here"
    if case == "no-matching-geojson":
        folder = tmp_path / "geo"
        folder.mkdir()
        _geojson(folder / "other-slide.geojson", [("Tumour", _square(100, 100, 300, 300))])
        return [good, "--annotations", folder], folder
    if case in ("points-long-row", "points-not-numbers"):
        bad = tmp_path / "good.csv"  # pandas alone reads "1,2,3" under "x,y" as the point (2, 3)
        bad.write_text("x,y\n" + ("1,2,3\n150,150\n" if case == "points-long-row" else "150,150\n250,2S0\n"))
        return [good, "--points", bad], bad
    raise AssertionError(case)


BAD_CASES = ["zero-byte", "truncated-tiff", "text-svs", "geojson-not-json", "geojson-no-polygons",
             "geojson-outside", "no-tissue", "no-mpp", "missing-annotations", "no-matching-geojson",
             "points-long-row", "points-not-numbers"]
PROBLEMS = {"zero-byte": "zero-byte", "truncated-tiff": "truncated", "text-svs": "not a readable slide",
            "geojson-not-json": "not valid JSON", "geojson-no-polygons": "no polygon",
            "geojson-outside": "outside the slide", "no-tissue": "no tissue", "no-mpp": "no resolution",
            "missing-annotations": "no such file", "no-matching-geojson": "no good.geojson for slide good.tiff",
            "points-long-row": "a row has more fields than the header",
            "points-not-numbers": "x, y on line 3 are not numbers"}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_inputs(tmp_path, capsys, case):
    args, culprit = _bad(tmp_path, case)
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    code, stdout, err = run_cli(["extract", *args, "--out", out_parent / "ds", "--mpp", 1.0, "--patch-size", 50],
                                capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {culprit}: ") and PROBLEMS[case] in lines[0], lines[0]
    assert list(out_parent.iterdir()) == []  # no dataset, no temp folder


def test_unwritable_output(tmp_path, capsys):
    slide = _slide(tmp_path / "s.tiff")
    _geojson(tmp_path / "s.geojson", [("Tumour", _square(100, 100, 300, 300))])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["extract", slide, "--annotations", tmp_path, "--out", blocker / "ds", "--mpp", 1.0],
                           capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"error: {blocker / 'ds'}: cannot write output")
    assert blocker.read_text() == "not a folder"
    # an existing dataset is not overwritten without --force
    out = tmp_path / "ds"
    assert run_cli(["extract", slide, "--annotations", tmp_path, "--out", out, "--mpp", 1.0], capsys)[0] == 0
    code, _, err = run_cli(["extract", slide, "--annotations", tmp_path, "--out", out, "--mpp", 1.0], capsys)
    assert code == 2 and "already exists" in err
    assert run_cli(["extract", slide, "--annotations", tmp_path, "--out", out, "--mpp", 1.0, "--force"],
                   capsys)[0] == 0


def test_help_shows_examples(capsys):
    for cmd in (["extract", "--help"], ["import", "--help"], ["bench", "extract", "--help"]):
        code, out, _ = run_cli(cmd, capsys)
        assert code == 0 and "Example" in out and "histoeq " in out.split("Example", 1)[1]


# ---------------------------------------------------------------- no tile kept, bad features, bad options
def _blob_slide(path: Path) -> Path:
    """Mostly white 600x400 px with one 30x30 px tissue blob: no 50 px tile is 90 % tissue."""
    img = np.full((400, 600, 3), 250, np.uint8)
    img[110:140, 110:140] = PINK
    tifffile.imwrite(path, img, resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    return path


@pytest.mark.parametrize("options, why", [
    (["--origin", "100000,100000"], "does not reach into the 600x400 px slide"),
    (["--patch-size", 100000], "the 600x400 px slide is smaller than one 100000 px tile at 1 µm/px"),
    (["--patch-size", 100000, "--origin", "0,0"], "tissue below 0.5: 1"),
    (["--min-tissue", 0.9], "tissue below 0.9"),
])
def test_no_tile_kept_names_the_slide(tmp_path, capsys, options, why):
    slide = _blob_slide(tmp_path / "blob.tiff")
    code, _, err = run_cli(["extract", slide, "--out", tmp_path / "ds", "--mpp", 1.0, *options], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {slide}: no tiles kept (") and why in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["blob.tiff"]


def test_empty_slide_among_others_is_reported(tmp_path, capsys):
    good, blob = _slide(tmp_path / "good.tiff"), _blob_slide(tmp_path / "blob.tiff")
    code, stdout, err = run_cli(["extract", good, blob, "--out", tmp_path / "ds", "--mpp", 1.0, "--min-tissue", 0.9],
                                capsys)
    assert code == 0, err
    assert "no tiles kept on blob.tiff (tissue below 0.9" in " ".join(stdout.split())
    assert set(PatchDataset.open(tmp_path / "ds").index["slide"]) == {"good.tiff"}
    code, _, err = run_cli(["extract", blob, blob, "--out", tmp_path / "ds2", "--mpp", 1.0, "--min-tissue", 0.9],
                           capsys)
    assert code == 2 and err.startswith("error: no tiles kept on any slide: blob.tiff (") and "\n" == err[-1:]
    assert len(err.splitlines()) == 1 and not (tmp_path / "ds2").exists()


_POLY = {"type": "Polygon", "coordinates": _square(100, 100, 300, 300)}


@pytest.mark.parametrize("bad, problem", [
    (None, "features[1] has no geometry"),
    ({"type": "Polygon", "coordinates": [[[100, 100], [float("nan"), 1], [300, 300], [100, 100]]]},
     "features[1] has non-finite coordinates"),
    ({"type": "Circle", "coordinates": [200, 200]}, "features[1] has an unknown geometry type 'Circle'"),
    ({"type": "MultiPolygon", "coordinates": "abc"}, "features[1] has a malformed MultiPolygon"),
    ("not a feature", "features[1] is not a GeoJSON Feature object"),
    ({"type": "Polygon", "coordinates": [[[-1e308, 0], [1e308, 5], [3, 1e308], [-1e308, 0]]]},
     "polygons GEOS cannot process"),
])
def test_bad_geojson_feature_is_an_error(tmp_path, capsys, bad, problem):
    slide = _slide(tmp_path / "s.tiff")
    good = {"type": "Feature", "geometry": _POLY, "properties": {"classification": {"name": "Tumour"}}}
    feature = bad if isinstance(bad, str) else {"type": "Feature", "geometry": bad,
                                                  "properties": {"classification": {"name": "Stroma"}}}
    geo = tmp_path / "s.geojson"
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [good, feature]}))
    code, _, err = run_cli(["extract", slide, "--annotations", geo, "--out", tmp_path / "ds", "--mpp", 1.0], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {geo}: {problem}"), err
    assert not (tmp_path / "ds").exists()


def test_unused_features_are_counted_in_the_summary(tmp_path, capsys):
    slide = _slide(tmp_path / "s.tiff")
    geo = tmp_path / "s.geojson"
    feats = [{"type": "Feature", "geometry": _POLY, "properties": {"classification": {"name": "Tumour"}}},
             {"type": "Feature", "geometry": {"type": "Point", "coordinates": [150, 150]}, "properties": {}},
             {"type": "Feature", "geometry": _POLY, "properties": None}]
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    code, stdout, err = run_cli(["extract", slide, "--annotations", geo, "--out", tmp_path / "ds", "--mpp", 1.0],
                                capsys)
    assert code == 0, err
    assert "annotation features not used: not a polygon: 1, no class: 1" in " ".join(stdout.split())


@pytest.mark.parametrize("option, message", [
    (["--stride", 0], "--patch-size and --stride must be at least 1, got 50 and 0"),
    (["--neg-ratio", -1], "--neg-ratio must be a number >= 0"),
    (["--workers", -1], "--workers must be at least 1"),
])
def test_bad_options(tmp_path, capsys, option, message):
    slide = _slide(tmp_path / "s.tiff")
    code, _, err = run_cli(["extract", slide, "--out", tmp_path / "ds", "--mpp", 1.0, *option], capsys)
    assert code == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("command", [["extract"], ["bench", "extract", "--repeats", 1]])
def test_slide_resolution_errors_name_slide_mpp(tmp_path, capsys, command):
    """extract and bench extract take the slides' µm/px as --slide-mpp (their --mpp is the patches' scale)."""
    from tests.conftest import assert_one_line_error

    nompp, good = _slide(tmp_path / "nompp.tiff", mpp=None), _slide(tmp_path / "good.tiff")
    out = [] if command[0] == "bench" else ["--out", tmp_path / "ds"]
    code, _, err = run_cli([*command, nompp, *out, "--mpp", 4.0, "--min-tissue", 0], capsys)
    assert_one_line_error(code, err, "nompp.tiff", "no resolution", "pass --slide-mpp")
    code, _, err = run_cli([*command, good, *out, "--mpp", 4.0, "--slide-mpp", -1], capsys)
    assert_one_line_error(code, err, "good.tiff", "--slide-mpp must be a positive number, got -1")
    assert not (tmp_path / "ds").exists()


def test_mpp_far_below_the_slides_is_refused_before_any_work(tmp_path, capsys):
    """mm typed for µm: a 100x upsampling would fill the disk with invented pixels."""
    slide = _slide(tmp_path / "s.tiff")  # 1 µm/px
    code, _, err = run_cli(["extract", slide, "--out", tmp_path / "ds", "--mpp", 0.01], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {slide}: --mpp 0.01 would upsample this 1 µm/px slide 100x"), err
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("option, message", [
    (["--classes", "Tumour,Necrosis"], "--classes names 'Necrosis', which no annotation has (classes there: Other, "
                                       "Stroma, Tumour)"),
    (["--ignore", "Othre"], "--ignore names 'Othre', which no annotation has"),
])
def test_class_names_no_annotation_has_are_refused(synthetic, capsys, option, message):
    """A typo in --classes would make an empty class and drop the real one; in --ignore it keeps the class meant
    to be left out."""
    folder, slide = synthetic
    code, _, err = run_cli(["extract", slide, "--annotations", folder, "--out", folder / "ds", "--mpp", 1.0, *option],
                           capsys)
    assert code == 2 and err.startswith(f"error: {folder / 's1.geojson'}: {message}"), err
    assert len(err.splitlines()) == 1 and not (folder / "ds").exists()


@pytest.mark.parametrize("option, message", [
    (["--classes", "Tumour,Tumour"], "--classes names Tumour more than once"),
    (["--classes", "Tumour,Stroma", "--ignore", "Stroma"], "Stroma is in both --classes and --ignore"),
])
def test_contradictory_class_options(synthetic, capsys, option, message):
    folder, slide = synthetic
    code, _, err = run_cli(["extract", slide, "--annotations", folder, "--out", folder / "ds", "--mpp", 1.0, *option],
                           capsys)
    assert code == 2 and err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err


def test_geojson_nested_too_deeply_is_an_error(tmp_path, capsys):
    slide = _slide(tmp_path / "s.tiff")
    geo = tmp_path / "s.geojson"
    geo.write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run_cli(["extract", slide, "--annotations", geo, "--out", tmp_path / "ds", "--mpp", 1.0], capsys)
    assert code == 2 and err == f"error: {geo}: annotation file nests 100000 levels deep, over the budget of 64\n", err
