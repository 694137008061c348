"""`histoeq doctor` prints every section, and says why CUDA cannot start in each of the ways it fails."""

from __future__ import annotations

import pytest

from histoeq.lab.doctor import CUDA_PROVIDER, cuda_problem
from tests.conftest import run_cli


def test_doctor_prints_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime
    import torch

    code, out, err = run_cli(["doctor"], capsys)
    assert code == 0 and err == "", err
    lines = out.splitlines()
    for section in ("versions", "slide readers", "onnx runtime", "cpu", "default model"):
        assert section in lines, (section, out)
    assert f"  torch: {torch.__version__}" in lines and f"  onnxruntime: {onnxruntime.__version__}" in lines
    assert any(line.startswith("  openslide: ") for line in lines)
    assert any(line.startswith("  providers: ") and "CPUExecutionProvider" in line for line in lines)
    assert any(line.startswith("  cuda: ") for line in lines) and any(line.startswith("  cores: ") for line in lines)
    assert any(line.startswith("  model: ") for line in lines)


def _no_driver(name: str) -> object:
    raise OSError(f"{name}: cannot open shared object file")


@pytest.mark.parametrize("providers,load,start,expected", [
    (["CPUExecutionProvider"], None, None, "no CUDA provider"),
    ([CUDA_PROVIDER], _no_driver, None, "no NVIDIA driver"),
    ([CUDA_PROVIDER], lambda name: None,
     lambda: (False, 'Error loading "libonnxruntime_providers_cuda.so" with error: libcublasLt.so.12: cannot open '
                     "shared object file: No such file or directory"), "library missing: libcublasLt.so.12"),
    ([CUDA_PROVIDER], lambda name: None, lambda: (False, "[E:onnxruntime] CUDA failure 100: no device"),
     "failed to load ([E:onnxruntime] CUDA failure 100: no device)"),
    ([CUDA_PROVIDER], lambda name: None, lambda: (True, ""), None),
])
def test_cuda_problem_names_the_reason(providers, load, start, expected) -> None:  # noqa: ANN001
    reason = cuda_problem(providers, **({"load_library": load} if load else {}), start=start)
    assert reason == expected if expected is None else expected in reason, reason
