"""`histoeq predict --outputs`: the writer registry, completeness per requested output, and reruns that add outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import assert_one_line_error, export_tiny_onnx, run_cli


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture
def slide(random_rgb_tiff: Path) -> Path:
    return random_rgb_tiff


def _predict(capsys, slide: Path, model: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["predict", slide, "--model", model, "--out", out, "--device", "cpu", "--min-tissue", "0",
                    *extra], capsys)


def test_csv_only_writes_only_csv_and_a_rerun_adds_the_missing_outputs(model: Path, slide: Path, tmp_path: Path,
                                                                      capsys) -> None:
    out = tmp_path / "out"
    code, stdout, err = _predict(capsys, slide, model, out, "--outputs", "csv")
    assert code == 0 and "done" in stdout, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["s.csv", "s.json"]
    record = json.loads((out / "s.json").read_text())
    assert record["outputs"] == {"csv": "s.csv"} and record["options"]["outputs"] == ["csv"]
    assert (out / "s.csv").read_text().count("\n") == 1 + record["tile_count"] == 1 + 6 * 5  # 300 x 260 px, 50 px
    csv_before = (out / "s.csv").stat().st_mtime_ns

    # Complete for a run asking for the same outputs (or fewer): skipped, nothing rewritten.
    code, stdout, _ = _predict(capsys, slide, model, out, "--outputs", "csv")
    assert code == 0 and "skipped" in stdout

    # Asking for more writes only what is missing; the record then lists all of them.
    code, stdout, err = _predict(capsys, slide, model, out, "--outputs", "heatmap,csv")
    assert code == 0 and "done" in stdout, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "s.csv", "s.heatmap.png", "s.json"]
    assert (out / "s.csv").stat().st_mtime_ns == csv_before
    assert json.loads((out / "s.json").read_text())["outputs"] == {"csv": "s.csv", "heatmap": "s.heatmap.png"}

    code, stdout, err = _predict(capsys, slide, model, out)  # default: every output but the regions
    assert code == 0 and "done" in stdout, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "s.csv", "s.geojson", "s.heatmap.png", "s.json", "s.tissue.png"]
    record = json.loads((out / "s.json").read_text())
    assert record["outputs"] == {"csv": "s.csv", "geojson": "s.geojson", "heatmap": "s.heatmap.png",
                                 "tissue": "s.tissue.png"}
    assert len(json.loads((out / "s.geojson").read_text())["features"]) == record["tile_count"]
    code, stdout, _ = _predict(capsys, slide, model, out, "--outputs", "geojson")
    assert code == 0 and "skipped" in stdout


def test_a_listed_output_whose_file_is_gone_is_written_again(model: Path, slide: Path, tmp_path: Path,
                                                              capsys) -> None:
    out = tmp_path / "out"
    assert _predict(capsys, slide, model, out, "--outputs", "csv,geojson")[0] == 0
    (out / "s.geojson").unlink()
    code, stdout, _ = _predict(capsys, slide, model, out, "--outputs", "csv,geojson")
    assert code == 0 and "done" in stdout and (out / "s.geojson").is_file()


@pytest.mark.parametrize(("value", "fragment"), [("csv,pdf", "unknown output 'pdf'"), (",", "no output named")])
def test_unknown_output_name_is_a_one_line_error(model: Path, slide: Path, tmp_path: Path, capsys, value: str,
                                                  fragment: str) -> None:
    code, _, err = _predict(capsys, slide, model, tmp_path / "out", "--outputs", value)
    assert_one_line_error(code, err, "--outputs", fragment, "csv, geojson, heatmap")
    assert not (tmp_path / "out").exists()


def test_each_slide_is_opened_once_and_closed(model: Path, slide: Path, tmp_path: Path, monkeypatch) -> None:
    import histoeq.infer.predict as predict_mod
    from histoeq.infer import PredictOptions, predict_slides

    other = tmp_path / "t.tiff"
    other.write_bytes(slide.read_bytes())
    opened, closed = [], []
    real_open = predict_mod.open_slide

    def counting_open(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        opened.append(Path(path).name)
        real_close = handle.close
        handle.close = lambda: (closed.append(Path(path).name), real_close())[1]
        return handle

    monkeypatch.setattr(predict_mod, "open_slide", counting_open)
    _, results = predict_slides([slide, other], model, tmp_path / "out", device="cpu",
                                options=PredictOptions(tissue_threshold=0, outputs=("csv",)))
    assert [r.skipped for r in results] == [False, False]
    assert sorted(opened) == ["s.tiff", "t.tiff"] and sorted(closed) == ["s.tiff", "t.tiff"]
    _, results = predict_slides([slide, other], model, tmp_path / "out", device="cpu",
                                options=PredictOptions(tissue_threshold=0, outputs=("csv",)))
    assert [r.skipped for r in results] == [True, True] and sorted(closed) == sorted(opened)


def test_records_of_earlier_versions_still_mark_their_outputs_complete(tmp_path: Path) -> None:
    """Earlier records list the heatmap under "heatmap.png"; outputs are matched by file name, so those slides are
    not predicted again."""
    from histoeq.infer.outputs import missing_outputs

    names = {"csv": "s.csv", "geojson": "s.geojson", "heatmap.png": "s.heatmap.png"}
    for name in names.values():
        (tmp_path / name).write_text("x")
    (tmp_path / "s.json").write_text(json.dumps({"outputs": names}))
    assert missing_outputs(tmp_path, "s", ("csv", "geojson", "heatmap")) == ()
    (tmp_path / "s.heatmap.png").unlink()
    assert missing_outputs(tmp_path, "s", ("csv", "geojson", "heatmap")) == ("heatmap",)
    (tmp_path / "s.json").write_text("{not json")
    assert missing_outputs(tmp_path, "s", ("csv",)) == ("csv",)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("m2") / "tiny.onnx", seed=1)


def test_a_rerun_with_another_model_or_options_refuses_unless_overwrite(model: Path, other_model: Path,
                                                                        slide: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = _predict(capsys, slide, model, out)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = _predict(capsys, slide, other_model, out)
    assert_one_line_error(code, err, "s.json", "model", "--overwrite")
    code, _, err = _predict(capsys, slide, model, out, "--stride", "25")
    assert_one_line_error(code, err, "stride_px=None", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    code, stdout, _ = _predict(capsys, slide, model, out)
    assert code == 0 and "skipped" in stdout  # same model, same options

    code, stdout, err = _predict(capsys, slide, other_model, out, "--overwrite", "--outputs", "csv")
    assert code == 0 and "done" in stdout, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["s.csv", "s.json"]
    record = json.loads((out / "s.json").read_text())
    assert record["settings"]["model_sha256"] != json.loads(before["s.json"])["settings"]["model_sha256"]
    code, stdout, _ = _predict(capsys, slide, other_model, out, "--outputs", "csv")
    assert code == 0 and "skipped" in stdout


def test_two_jobs_with_different_models_cannot_share_a_folder(model: Path, other_model: Path, tmp_path: Path,
                                                              capsys) -> None:
    """The folder's settings are claimed before any slide is done: a second job with another model refuses even
    while the first has written no slide yet (here: the first job's claim without any slide record)."""
    from histoeq.infer import PredictOptions
    from histoeq.infer.rerun import PredictSettings, claim_folder

    out = tmp_path / "out"
    out.mkdir()
    options = PredictOptions(tissue_threshold=0.0, context="none", region_threshold=0.5)  # as the run resolves
    claim_folder(out, PredictSettings.of(model, options), overwrite=False)
    rgb = np.random.default_rng(1).integers(0, 255, (120, 120, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "t.tiff", rgb, photometric="rgb", resolution=(2500, 2500),
                     resolutionunit="CENTIMETER")
    code, _, err = _predict(capsys, tmp_path / "t.tiff", other_model, out)
    assert_one_line_error(code, err, "holds predictions made with", "--overwrite")
    code, _, err = _predict(capsys, tmp_path / "t.tiff", model, out)  # a shard of the same job agrees
    assert code == 0, err


def test_context_adds_a_combined_column_to_csv_geojson_and_record(model: Path, slide: Path, tmp_path: Path,
                                                                   capsys) -> None:
    import pandas as pd

    out = tmp_path / "out"
    code, _, err = _predict(capsys, slide, model, out, "--context", "box3")
    assert code == 0, err
    table = pd.read_csv(out / "s.csv")
    assert "prob_b_box3" in table.columns
    step = int(table["width"].iloc[0])
    pos = {(x, y): p for x, y, p in zip(table["minx"], table["miny"], table["prob_b"])}
    for x, y, combined in zip(table["minx"], table["miny"], table["prob_b_box3"]):
        near = [pos[(x + dx, y + dy)] for dx in (-step, 0, step) for dy in (-step, 0, step) if (x + dx, y + dy) in pos]
        assert combined == pytest.approx(np.mean(near), abs=2e-6)
    features = json.loads((out / "s.geojson").read_text())["features"]
    assert "prob_b_box3" in features[0]["properties"]["measurements"]
    record = json.loads((out / "s.json").read_text())
    assert record["context"] == {"kernel": "box3", "column": "prob_b_box3", "heatmap": "with context"}
    code, _, err = _predict(capsys, slide, model, tmp_path / "bad", "--context", "gauss")
    assert_one_line_error(code, err, "gauss")


def test_slides_from_a_list_file(model: Path, slide: Path, tmp_path: Path, capsys) -> None:
    listing = tmp_path / "cohort.txt"
    listing.write_text(f"{slide.name}\n")
    code, stdout, err = _predict(capsys, listing, model, tmp_path / "out", "--outputs", "csv")
    assert code == 0 and "done" in stdout, err
    assert (tmp_path / "out" / "s.csv").is_file()


def test_tissue_mask_regions_and_summary(model: Path, slide: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    out = tmp_path / "out"
    code, _, err = _predict(capsys, slide, model, out, "--outputs", "csv,tissue,regions", "--region-threshold", "0.3")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "s.csv", "s.json", "s.regions.geojson", "s.tissue.png"]
    record = json.loads((out / "s.json").read_text())
    summary = record["summary"]
    table = __import__("pandas").read_csv(out / "s.csv")
    assert summary["tiles"] == len(table) and summary["threshold"] == 0.3
    assert summary["mean_p"] == pytest.approx(table["prob_b"].mean(), abs=1e-5)
    regions = json.loads((out / "s.regions.geojson").read_text())["features"]
    positive = int((table["prob_b"] >= 0.3).sum())
    assert sum(f["properties"]["measurements"]["Tiles"] for f in regions) == positive
    mask = Image.open(out / "s.tissue.png")
    assert mask.mode in ("1", "L") and max(mask.size) <= 1024


def test_a_rerun_writes_identical_geojson(model: Path, slide: Path, tmp_path: Path, capsys) -> None:
    for name in ("a", "b"):
        code, _, err = _predict(capsys, slide, model, tmp_path / name, "--outputs", "geojson")
        assert code == 0, err
    first = (tmp_path / "a" / "s.geojson").read_bytes()
    assert first == (tmp_path / "b" / "s.geojson").read_bytes()
    ids = [f["id"] for f in json.loads(first)["features"]]
    assert len(set(ids)) == len(ids)
