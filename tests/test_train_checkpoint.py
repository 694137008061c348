"""Checkpoint files: atomic write, safe read, one-line errors for missing / corrupt / foreign files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from histoeq.errors import InputError
from histoeq.runs.checkpoint import load_checkpoint, load_state, resolve_checkpoint, save_checkpoint


def _payload(model: nn.Module) -> dict:
    return {
        "model_config": {"name": "tiny"},
        "state_dict": model.state_dict(),
        "classes": ["non-IDC", "IDC"],
        "tile_px": 50,
        "mpp": 4.0,
        "normalisation": {"mean": [0.5] * 3, "std": [0.2] * 3},
        "metrics": {"val": {"auc": 0.5}},
        "epoch": 1,
    }


def test_roundtrip_and_no_temp_left(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "run" / "best.pt", _payload(model))
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]
    payload = load_checkpoint(path)
    assert payload["format"] == "histoeq-checkpoint" and payload["version"] == 1
    assert torch.equal(payload["state_dict"]["weight"], model.weight.detach())
    assert resolve_checkpoint(tmp_path / "run") == path


@pytest.mark.parametrize("content", [b"", b"garbage bytes, not a zip"])
def test_corrupt_files_raise_input_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad.pt"):
        load_checkpoint(path)


def test_truncated_file_raises_input_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "best.pt", _payload(nn.Linear(3, 2)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError):
        load_checkpoint(path)


def test_missing_and_foreign(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not a histoeq checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="no best.pt"):
        resolve_checkpoint(tmp_path)


def test_state_dict_from_another_model(tmp_path: Path) -> None:
    payload = load_checkpoint(save_checkpoint(tmp_path / "a.pt", _payload(nn.Linear(3, 2))))
    with pytest.raises(InputError, match="do not fit"):
        load_state(nn.Linear(4, 2), payload["state_dict"], tmp_path / "a.pt")


def test_full_disk_while_saving_a_checkpoint_names_it(tmp_path, monkeypatch) -> None:
    """torch's own writer would report a full disk as an opaque RuntimeError; the file write reports ENOSPC."""
    import errno

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(InputError, match="No space left on device") as info:
        save_checkpoint(tmp_path / "best.pt", {"w": torch.zeros(3)})
    assert info.value.path == str(tmp_path / "best.pt") and list(tmp_path.iterdir()) == []
