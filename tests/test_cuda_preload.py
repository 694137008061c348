"""CUDA and cuDNN from NVIDIA's wheels: preloaded once before the first CUDA session, and every way it fails ends in
the one-line refusal of `--device cuda` (and a line of `histoeq doctor`), never in a traceback or stray output.

This machine's onnxruntime has no CUDA provider, so one is claimed (as onnxruntime-gpu without a GPU would list it)
and preload_dlls is replaced by stand-ins that fail the ways the real one does: it prints, it does not raise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest

from histoeq.infer import onnx_model
from histoeq.infer.onnx_model import CudaLibraries, OnnxTileModel, preload_cuda_libraries
from tests.conftest import assert_one_line_error, export_tiny_onnx, run_cli

MISSING = ("Failed to load libcublasLt.so.13: libcublasLt.so.13: cannot open shared object file: No such file or "
           "directory")

pytestmark = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture
def cuda_claimed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A CUDA provider on offer and a preload_dlls that prints what the real one prints when cuBLAS is not
    installed; yields the list its calls are counted in. The once-per-process cache is emptied around the test."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a real CUDA provider is present")
    calls: list[str] = []

    def preload_dlls(**_: object) -> None:
        calls.append("preload")
        print(MISSING)
        print("Please follow https://onnxruntime.ai/docs/install/#cuda-and-cudnn to install CUDA.")

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "preload_dlls", preload_dlls, raising=False)
    preload_cuda_libraries.cache_clear()
    yield calls
    preload_cuda_libraries.cache_clear()


def test_preload_runs_once_and_names_what_is_missing(model: Path, cuda_claimed: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert OnnxTileModel(model, "auto").provider == "CPUExecutionProvider"
    assert OnnxTileModel(model, "auto").provider == "CPUExecutionProvider"
    assert cuda_claimed == ["preload"]  # two sessions, one preload
    libraries = preload_cuda_libraries()
    assert libraries.attempted and "libcublasLt" in libraries.missing and "libcudnn" in libraries.missing
    assert libraries.problem.startswith("Failed to load libcublasLt.so.13")
    assert capsys.readouterr().out == ""  # preload_dlls' prints do not reach the CLI's stdout


def test_device_cuda_refusal_says_which_libraries_are_missing(model: Path, cuda_claimed: list[str], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    slide = tmp_path / "slide.tiff"
    _write_tiff(slide)
    code, out, err = run_cli(["predict", slide, "--model", model, "--out", tmp_path / "out", "--device", "cuda"],
                             capsys)
    assert_one_line_error(code, err, "could not start its CUDA provider", "not found: libcudart", "libcublasLt.so.13",
                          "CPUExecutionProvider")
    assert "Failed to load" not in out
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_preload_that_raises_is_still_one_line(model: Path, cuda_claimed: list[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("Invalid parameter of directory=None. The directory does not exist!")

    monkeypatch.setattr(ort, "preload_dlls", broken)
    libraries = preload_cuda_libraries()
    assert libraries.problem.startswith("Invalid parameter of directory")
    slide = tmp_path / "slide.tiff"
    _write_tiff(slide)
    code, _, err = run_cli(["predict", slide, "--model", model, "--out", tmp_path / "out", "--device", "cuda"], capsys)
    assert_one_line_error(code, err, "could not start its CUDA provider", "Invalid parameter of directory")


def test_without_preload_dlls_the_library_path_must_provide_cuda(cuda_claimed: list[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ort, "preload_dlls")
    libraries = preload_cuda_libraries()
    assert not libraries.attempted and cuda_claimed == []
    assert "has no preload_dlls" in libraries.describe()


def test_describe_says_where_the_libraries_came_from() -> None:
    wheels = "/opt/venv/lib/python3.11/site-packages/nvidia"
    found = CudaLibraries(attempted=True, loaded={"libcudart.so.13": f"{wheels}/cu13/lib/libcudart.so.13",
                                                  "libcudnn.so.9": f"{wheels}/cudnn/lib/libcudnn.so.9"})
    assert found.from_wheels
    assert found.describe() == f"libcudart.so.13, libcudnn.so.9 loaded from NVIDIA's wheels ({wheels})"
    system = CudaLibraries(attempted=True, loaded={"libcudart.so.13": "/usr/local/cuda/lib64/libcudart.so.13"})
    assert not system.from_wheels and "loaded from the system (/usr/local/cuda/lib64)" in system.describe()


def test_mapped_libraries_include_onnxruntime_itself() -> None:
    mapped = onnx_model._mapped_libraries()
    if mapped is None:
        pytest.skip("no /proc/self/maps on this system")
    assert any(name.startswith("onnxruntime_pybind11_state") for name in mapped), sorted(mapped)[:20]


def test_doctor_reports_the_cuda_libraries(cuda_claimed: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["doctor"], capsys)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("  cuda libraries: "))
    assert "not found: libcudart" in line and "libcublasLt.so.13" in line and line.endswith("[!]"), line
    assert "Failed to load" not in out.replace(line, "")  # captured, reported once in its line


def _write_tiff(path: Path) -> None:
    """A small RGB slide of noise at 4 µm/px: predict opens it before it builds the session."""
    import numpy as np
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, photometric="rgb", resolution=(2500, 2500), resolutionunit="CENTIMETER")
