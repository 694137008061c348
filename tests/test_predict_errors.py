"""Bad inputs to `histoeq predict`: exit 2, one line on stderr, no traceback, nothing (half-)written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import tifffile
from onnx import TensorProto, helper

from tests.conftest import assert_one_line_error, export_tiny_onnx, run_cli


@pytest.fixture(scope="module")
def good_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("m") / "good.onnx")


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def _predict(capsys, slide: Path, model: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["predict", slide, "--model", model, "--out", out, "--device", "cpu", *extra], capsys)


def test_zero_byte_slide(good_model: Path, tmp_path: Path, capsys) -> None:
    slide = tmp_path / "empty.svs"
    slide.write_bytes(b"")
    code, _, err = _predict(capsys, slide, good_model, tmp_path / "out")
    assert_one_line_error(code, err, "empty.svs", "zero-byte")
    assert _nothing_written(tmp_path / "out")


def test_text_file_named_svs(good_model: Path, tmp_path: Path, capsys) -> None:
    slide = tmp_path / "notes.svs"
    slide.write_text("this is not a slide\n" * 50)
    code, _, err = _predict(capsys, slide, good_model, tmp_path / "out")
    assert_one_line_error(code, err, "notes.svs")
    assert _nothing_written(tmp_path / "out")


def test_tiff_in_a_colour_space_no_reader_converts(good_model: Path, tmp_path: Path, capsys) -> None:
    slide = tmp_path / "lab.tif"  # CIE L*a*b* strips: OpenSlide refuses them, histoeq's TIFF reader must not guess
    tifffile.imwrite(slide, np.full((300, 300, 3), 128, np.uint8), photometric="cielab",
                     resolution=(2500, 2500), resolutionunit="CENTIMETER")
    code, _, err = _predict(capsys, slide, good_model, tmp_path / "out")
    assert_one_line_error(code, err, "lab.tif", "CIELAB")
    assert _nothing_written(tmp_path / "out")


def test_truncated_tiff(good_model: Path, idc_dir: Path, tmp_path: Path, capsys) -> None:
    data = (idc_dir / "slides" / "9124.tiff").read_bytes()
    slide = tmp_path / "cut.tiff"
    slide.write_bytes(data[: len(data) // 3])
    code, _, err = _predict(capsys, slide, good_model, tmp_path / "out", "--min-tissue", "0")
    assert_one_line_error(code, err, "cut.tiff")
    assert _nothing_written(tmp_path / "out")


def test_missing_slide(good_model: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _predict(capsys, tmp_path / "nope.svs", good_model, tmp_path / "out")
    assert_one_line_error(code, err, "nope.svs")


def test_onnx_file_that_is_not_a_model(cmu_svs: Path, tmp_path: Path, capsys) -> None:
    for name, payload in (("garbage.onnx", np.random.default_rng(0).bytes(4096)), ("empty.onnx", b"")):
        model = tmp_path / name
        model.write_bytes(payload)
        code, _, err = _predict(capsys, cmu_svs, model, tmp_path / "out")
        assert_one_line_error(code, err, name)
    assert _nothing_written(tmp_path / "out")


def _with_props(proto: onnx.ModelProto, props: dict[str, str]) -> onnx.ModelProto:
    del proto.metadata_props[:]
    helper.set_model_props(proto, props)
    return proto


def test_model_whose_input_or_metadata_does_not_fit(good_model: Path, cmu_svs: Path, tmp_path: Path, capsys) -> None:
    good = onnx.load(str(good_model))
    props = {p.key: p.value for p in good.metadata_props}
    # 1. A float NCHW graph carrying histoeq metadata: the input does not fit.
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 50, 50])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3, 50, 50])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["probabilities"])], "g", [x], [y])
    wrong_input = _with_props(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), props)
    onnx.save(wrong_input, tmp_path / "nchw.onnx")
    code, _, err = _predict(capsys, cmu_svs, tmp_path / "nchw.onnx", tmp_path / "out")
    assert_one_line_error(code, err, "nchw.onnx", "uint8")
    # 2. The right graph without histoeq metadata.
    onnx.save(_with_props(onnx.load(str(good_model)), {}), tmp_path / "nometa.onnx")
    code, _, err = _predict(capsys, cmu_svs, tmp_path / "nometa.onnx", tmp_path / "out")
    assert_one_line_error(code, err, "nometa.onnx", "metadata")
    # 3. Metadata that contradicts the graph (64 px tiles, three classes).
    meta = props["histoeq"].replace('"tile_px": 50', '"tile_px": 64')
    onnx.save(_with_props(onnx.load(str(good_model)), {**props, "histoeq": meta}), tmp_path / "tile64.onnx")
    code, _, err = _predict(capsys, cmu_svs, tmp_path / "tile64.onnx", tmp_path / "out")
    assert_one_line_error(code, err, "tile64.onnx", "64")
    meta = props["histoeq"].replace('"classes": ["a", "b"]', '"classes": ["a", "b", "c"]')
    onnx.save(_with_props(onnx.load(str(good_model)), {**props, "histoeq": meta}), tmp_path / "classes.onnx")
    code, _, err = _predict(capsys, cmu_svs, tmp_path / "classes.onnx", tmp_path / "out")
    assert_one_line_error(code, err, "classes.onnx", "3 classes")
    assert _nothing_written(tmp_path / "out")


def test_device_cuda_without_cuda(good_model: Path, cmu_svs: Path, tmp_path: Path, capsys) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider; the no-CUDA path cannot be shown here")
    code, _, err = run_cli(["predict", cmu_svs, "--model", good_model, "--out", tmp_path / "out", "--device", "cuda"],
                           capsys)
    assert_one_line_error(code, err, "--device cuda", "CUDA")
    assert _nothing_written(tmp_path / "out")


def test_failure_midway_keeps_earlier_slides_and_leaves_no_partial_files(
    good_model: Path, idc_dir: Path, tmp_path: Path, capsys
) -> None:
    good = tmp_path / "a_good.tiff"
    shutil.copy(idc_dir / "slides" / "9124.tiff", good)
    # Header intact (it opens, so the up-front check passes), tile data garbled in the middle: fails while reading.
    data = bytearray((idc_dir / "slides" / "9124.tiff").read_bytes())
    data[len(data) // 3 : len(data) // 2] = np.random.default_rng(0).bytes(len(data) // 2 - len(data) // 3)
    bad = tmp_path / "b_bad.tiff"
    bad.write_bytes(bytes(data))
    code, _, err = run_cli(["predict", good, bad, "--model", good_model, "--out", tmp_path / "out",
                            "--device", "cpu", "--min-tissue", "0"], capsys)
    assert_one_line_error(code, err, "b_bad.tiff")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [".histoeq-predict.json", "a_good.csv", "a_good.geojson", "a_good.heatmap.png", "a_good.json",
                     "a_good.tissue.png"]


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_silent_cuda_fallback_is_detected(good_model: Path, cmu_svs: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """onnxruntime-gpu without CUDA 13/cuDNN 9 lists the CUDA provider but runs on the CPU. Simulated by making this
    onnxruntime claim a CUDA provider: the session then falls back exactly like that."""
    import onnxruntime as ort

    from histoeq.infer import OnnxTileModel

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a real CUDA provider is present")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert OnnxTileModel(good_model, "auto").provider == "CPUExecutionProvider"  # auto: falls back and says so
    code, _, err = run_cli(["predict", cmu_svs, "--model", good_model, "--out", tmp_path / "out", "--device", "cuda"],
                           capsys)
    assert_one_line_error(code, err, "could not start its CUDA provider", "CPUExecutionProvider")
    assert _nothing_written(tmp_path / "out")


# ---- synthetic slides: small TIFFs, no real data needed -----------------------------------------------------------

def _tiff(path: Path, mpp: float | None = 4.0, size: int = 300) -> Path:
    """A `size`² RGB slide of noise at `mpp` µm/px (no resolution tags when `mpp` is None)."""
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    extra = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, rgb, photometric="rgb", **extra)
    return path


def test_unusable_output_folder_fails_before_any_slide(good_model: Path, tmp_path: Path, capsys) -> None:
    slide = _tiff(tmp_path / "s.tiff")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for out, fragment in ((blocker, "not a directory"), (blocker / "sub", "is a file")):
        code, _, err = _predict(capsys, slide, good_model, out)
        assert_one_line_error(code, err, str(out), fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "s.tiff"]


def test_atomic_writes_turn_os_errors_into_input_errors(tmp_path: Path) -> None:
    from histoeq.atomic import write_text_atomic
    from histoeq.errors import InputError

    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    for target in (tmp_path / "afile" / "out.txt", tmp_path / "adir"):
        with pytest.raises(InputError, match="cannot write the output") as info:
            write_text_atomic(target, "hello")
        assert info.value.path == str(target)


def test_full_or_read_only_disk_while_writing_names_the_output(tmp_path: Path, monkeypatch) -> None:
    """ENOSPC / EROFS raised by a writer inside an atomic block (np.save, savefig, a file write) is the output's
    problem: one InputError naming the target, not the temporary, and nothing left behind."""
    import errno

    from histoeq.atomic import atomic_path, atomic_paths, write_text_atomic
    from histoeq.errors import InputError

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InputError, match="No space left on device") as info:
        with atomic_path(tmp_path / "a.npy") as tmp:
            full(tmp)
    assert info.value.path == str(tmp_path / "a.npy")
    targets = [tmp_path / "s.csv", tmp_path / "s.json"]
    with pytest.raises(InputError, match="No space left") as info:
        with atomic_paths(targets) as (csv, _):
            monkeypatch.setattr("os.fsync", full)
            write_text_atomic(csv, "x")  # predict writes each temporary atomically in turn
    assert info.value.path == str(targets[0])
    assert list(tmp_path.iterdir()) == []


def test_output_taken_by_a_directory_leaves_no_partial_set(good_model: Path, tmp_path: Path, capsys) -> None:
    slide = _tiff(tmp_path / "s.tiff")
    (tmp_path / "out" / "s.geojson").mkdir(parents=True)
    code, _, err = _predict(capsys, slide, good_model, tmp_path / "out", "--min-tissue", "0")
    assert_one_line_error(code, err, "s.geojson", "is a directory")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["s.geojson"]


def test_a_failed_rename_removes_the_files_already_renamed(tmp_path: Path) -> None:
    """The per-slide set is all or nothing even when the clash appears while writing (another process)."""
    from histoeq.atomic import atomic_paths
    from histoeq.errors import InputError

    names = ["s.csv", "s.geojson", "s.heatmap.png", "s.json"]
    with pytest.raises(InputError, match="s.heatmap.png"):
        with atomic_paths([tmp_path / n for n in names]) as tmps:
            for tmp in tmps:
                tmp.write_text("data")
            (tmp_path / "s.heatmap.png").mkdir()
            (tmp_path / "s.heatmap.png" / "keep").write_text("x")  # a non-empty folder cannot be replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.heatmap.png"]


@pytest.mark.parametrize(("option", "value"), [("--stride", "-5"), ("--stride", "0"), ("--workers", "-1"),
                                               ("--workers", "0")])
def test_stride_and_workers_below_one(good_model: Path, tmp_path: Path, capsys, option: str, value: str) -> None:
    slide = _tiff(tmp_path / "s.tiff")
    code, _, err = _predict(capsys, slide, good_model, tmp_path / "out", option, value)
    assert_one_line_error(code, err, option, "at least 1")
    assert _nothing_written(tmp_path / "out")


def test_tiles_under_one_pixel_or_too_many_are_refused(good_model: Path, tmp_path: Path, capsys) -> None:
    from histoeq.errors import InputError
    from histoeq.slide.tiler import tile_grid

    slide = _tiff(tmp_path / "s.tiff")
    code, _, err = _predict(capsys, slide, good_model, tmp_path / "out", "--slide-mpp", "10000")
    assert_one_line_error(code, err, "s.tiff", "under one pixel")
    assert _nothing_written(tmp_path / "out")
    with pytest.raises(InputError, match="big.svs.*more than"):
        tile_grid((200_000, 200_000), 0.25, 0.01, 50, source="big.svs")  # 2 px tiles: 1e10 of them
    with pytest.raises(InputError, match="under one pixel"):
        tile_grid((1000, 1000), 0.5, 1e-9, 50)


def test_model_metadata_mpp_infinite_or_tiny_and_bad_format_version(
    good_model: Path, tmp_path: Path, capsys
) -> None:
    props = {p.key: p.value for p in onnx.load(str(good_model)).metadata_props}
    slide = _tiff(tmp_path / "s.tiff")
    cases = {"inf.onnx": ('"mpp": 4.0', '"mpp": Infinity', "µm/px"),
             "tiny.onnx": ('"mpp": 4.0', '"mpp": 1e-09', "s.tiff"),
             "fv.onnx": ('"format_version": 1', '"format_version": "x"', "format_version")}
    for name, (old, new, fragment) in cases.items():
        assert old in props["histoeq"]
        meta = props["histoeq"].replace(old, new)
        onnx.save(_with_props(onnx.load(str(good_model)), {**props, "histoeq": meta}), tmp_path / name)
        code, _, err = _predict(capsys, slide, tmp_path / name, tmp_path / "out")
        assert_one_line_error(code, err, name if name != "tiny.onnx" else "s.tiff", fragment)
    assert _nothing_written(tmp_path / "out")


def test_two_slides_with_one_stem_are_refused(good_model: Path, tmp_path: Path, capsys) -> None:
    a, b = _tiff(tmp_path / "a" / "slide.tiff"), _tiff(tmp_path / "b" / "slide.tiff")
    code, _, err = run_cli(["predict", a, b, "--model", good_model, "--out", tmp_path / "out", "--device", "cpu"],
                           capsys)
    assert_one_line_error(code, err, str(a), str(b), "stem")
    assert _nothing_written(tmp_path / "out")


def test_every_slide_is_checked_before_the_first_runs(good_model: Path, tmp_path: Path, capsys) -> None:
    good, nores = _tiff(tmp_path / "a.tiff"), _tiff(tmp_path / "b_nores.tiff", mpp=None)
    code, _, err = run_cli(["predict", good, nores, "--model", good_model, "--out", tmp_path / "out",
                            "--device", "cpu"], capsys)
    assert_one_line_error(code, err, "b_nores.tiff", "--slide-mpp")
    assert _nothing_written(tmp_path / "out")
    (tmp_path / "folder.svs").mkdir()
    code, _, err = _predict(capsys, tmp_path / "folder.svs", good_model, tmp_path / "out")
    assert_one_line_error(code, err, "folder.svs", "folder holds no slide file")


def test_slide_smaller_than_one_tile_is_refused_before_any_slide_runs(good_model: Path, tmp_path: Path,
                                                                     capsys) -> None:
    from histoeq.errors import InputError
    from histoeq.slide.tiler import tile_grid

    good, tiny = _tiff(tmp_path / "a.tiff"), _tiff(tmp_path / "b_tiny.tiff", size=40)  # 50 px tiles, same µm/px
    code, _, err = run_cli(["predict", good, tiny, "--model", good_model, "--out", tmp_path / "out",
                            "--device", "cpu", "--min-tissue", "0"], capsys)
    assert_one_line_error(code, err, "b_tiny.tiff", "40 x 40 px", "too small for one 50 px tile")
    assert _nothing_written(tmp_path / "out")
    with pytest.raises(InputError, match="thin.svs: slide is 1000 x 99 px"):  # one side is enough
        tile_grid((1000, 99), 0.5, 1.0, 50, source="thin.svs")


def test_slide_resolution_errors_name_slide_mpp_in_predict_and_bench_predict(good_model: Path, tmp_path: Path,
                                                                      capsys) -> None:
    nores, good = _tiff(tmp_path / "nores.tiff", mpp=None), _tiff(tmp_path / "good.tiff")
    for command in (["predict", "--out", tmp_path / "out"], ["bench", "predict"]):
        code, _, err = run_cli([*command, nores, "--model", good_model, "--device", "cpu"], capsys)
        assert_one_line_error(code, err, "nores.tiff", "no resolution", "pass --slide-mpp")
        code, _, err = run_cli([*command, good, "--model", good_model, "--device", "cpu", "--slide-mpp", "-1"],
                               capsys)
        assert_one_line_error(code, err, "good.tiff", "--slide-mpp must be a positive number, got -1")
    assert _nothing_written(tmp_path / "out")


def test_slide_without_tissue_is_reported_not_hidden(good_model: Path, tmp_path: Path, capsys) -> None:
    """A blank slide (white glass, or no data at all) is not an error, but the table must not call it done."""
    import tifffile

    blank = tmp_path / "blank.tiff"
    tifffile.imwrite(blank, np.full((300, 300, 3), 255, np.uint8), photometric="rgb",
                     resolution=(2500, 2500), resolutionunit="CENTIMETER")
    slide = _tiff(tmp_path / "noise.tiff")
    code, out, _ = _predict(capsys, blank, good_model, tmp_path / "out", "--min-tissue", "0.1")
    assert code == 0 and "no tissue found" in out and "--min-tissue 0" in out
    assert (tmp_path / "out" / "blank.csv").read_text().count("\n") == 1  # the header only
    code, out, _ = _predict(capsys, slide, good_model, tmp_path / "out2", "--min-tissue", "0")
    assert code == 0 and "no tissue found" not in out
