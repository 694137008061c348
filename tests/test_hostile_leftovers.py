"""Temporaries of a process killed mid-write are removed by the next command that checks the folder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from histoeq.atomic import (
    STALE_TEMP_S,
    atomic_open,
    check_output_dir,
    check_output_file,
)
from histoeq.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def test_temporary_of_a_killed_writer_is_removed_by_the_next_run(tmp_path):
    script = ("import os, signal\nfrom histoeq.atomic import atomic_open\n"
              f"with atomic_open({str(tmp_path / 'tiles.csv')!r}) as fh:\n"
              "    fh.write('x,y\\n'); fh.flush()\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert proc.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".tiles.csv.") and ".histoeq-tmp" in left[0], left
    check_output_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_live_writers_and_foreign_files_are_kept(tmp_path):
    with atomic_open(tmp_path / "a.json") as fh:  # our own temporary, mid-write: its process is alive
        fh.write("{}")
        check_output_file(tmp_path / "b.json")
        assert len(list(tmp_path.glob(".a.json.*.histoeq-tmp"))) == 1
    foreign = [tmp_path / ".a.json.XYZ123.tmp", tmp_path / ".other.histoeq-tmp", tmp_path / "notes.txt"]
    for path in foreign:
        path.write_text("keep")
    other_host = tmp_path / ".a.json.0000beef.1-abc.histoeq-tmp"
    other_host.write_text("another machine's, recent")
    old = tmp_path / ".a.json.0000beef.2-abc.histoeq-tmp.png"
    old.write_text("another machine's, two days old")
    past = time.time() - 2 * STALE_TEMP_S
    os.utime(old, (past, past))
    check_output_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in foreign), other_host.name,
                                                                "a.json"])


@pytest.mark.realdata
def test_resume_through_another_spelling_of_the_data_path(idc_dir: Path, tmp_path_factory, tmp_path: Path) -> None:
    """--data compared by the dataset's content hash, not as text: a link or relative spelling may resume."""
    from histoeq.train.config import TrainConfig
    from histoeq.train.trainer import train
    from tests.test_train_helpers import small_idc_fixture_path, small_threads

    small_threads()
    data = small_idc_fixture_path(idc_dir, tmp_path_factory)
    link = tmp_path / "same-data"
    link.symlink_to(data)
    options = {"model": "cnn", "width": 4, "epochs": 2, "max_steps": 2, "batch_size": 16, "augment": "none",
               "device": "cpu", "seed": 7}
    train(TrainConfig(data=data, out=tmp_path / "run", epochs=1, **{k: v for k, v in options.items()
                                                                  if k != "epochs"}))
    with pytest.raises(InputError, match="cannot resume with different options \\(epochs: 1 -> 2\\)"):
        train(TrainConfig(data=link, out=tmp_path / "run", resume=True, **options))
    train(TrainConfig(data=link, out=tmp_path / "run", resume=True, epochs=1,
                      **{k: v for k, v in options.items() if k != "epochs"}))
