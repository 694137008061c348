"""A dataset's identity is its content, and its folder is shared like any other output (the user's umask)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from histoeq.data.dataset import content_hash
from tests.conftest import run_cli


def _image_folder(root: Path) -> Path:
    for k, cls in enumerate(("benign", "malignant")):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / cls / f"case{i}_{cls}.png"), np.full((6, 6, 3), 40 * i + 100 * k, np.uint8))
    return root


def test_same_data_through_two_paths_has_one_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from histoeq.runs.runinfo import dataset_hash

    source = _image_folder(tmp_path / "patches")
    (tmp_path / "link").symlink_to(source)
    monkeypatch.chdir(tmp_path)
    assert run_cli(["import", source, "--out", tmp_path / "a"], capsys)[0] == 0
    assert run_cli(["import", "link/../link", "--out", "b"], capsys)[0] == 0
    meta_a, meta_b = (json.loads((tmp_path / d / "meta.json").read_text()) for d in ("a", "b"))
    assert meta_a["provenance"]["folder"] != meta_b["provenance"]["folder"]
    assert meta_a["content_sha256"] == meta_b["content_sha256"] == dataset_hash(tmp_path / "b")
    # a dataset written before the hash was recorded gets the same value from its files
    del meta_b["content_sha256"]
    (tmp_path / "b" / "meta.json").write_text(json.dumps(meta_b))
    assert content_hash(tmp_path / "b") == meta_a["content_sha256"]
    # different pixels, different hash
    cv2.imwrite(str(source / "benign" / "case0_benign.png"), np.full((6, 6, 3), 7, np.uint8))
    assert run_cli(["import", source, "--out", tmp_path / "c"], capsys)[0] == 0
    assert content_hash(tmp_path / "c") != meta_a["content_sha256"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_dataset_folder_follows_the_umask(tmp_path: Path, capsys: pytest.CaptureFixture[str], umask: int,
                                          mode: int) -> None:
    source = _image_folder(tmp_path / "patches")
    previous = os.umask(umask)
    try:
        code, _, err = run_cli(["import", source, "--out", tmp_path / "ds"], capsys)
    finally:
        os.umask(previous)
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "ds").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "ds" / "meta.json").stat().st_mode) == 0o666 & ~umask
