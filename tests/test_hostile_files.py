"""Checkpoints, annotations and model metadata that claim more than they hold: one error line, no big allocation."""

from __future__ import annotations

import time

import pytest

from histoeq.errors import InputError
from tests import hostile


def test_checkpoint_zip_bomb_is_refused_from_its_directory(tmp_path):
    from histoeq.train.checkpoint import load_checkpoint

    path = hostile.zip_bomb_checkpoint(tmp_path / "bomb.pt", 600 << 20)
    assert path.stat().st_size < 2 << 20
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"unpacks to 0\.6 GiB from 0\.\d MiB"):
        load_checkpoint(path)
    assert time.perf_counter() - start < 2


def test_ordinary_checkpoint_passes_the_archive_check(tmp_path):
    import torch

    from histoeq.train.checkpoint import check_archive_budget

    torch.save({"weights": torch.zeros(1 << 20)}, tmp_path / "ok.pt")
    check_archive_budget(tmp_path / "ok.pt")
