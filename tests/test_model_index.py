"""models/index.json: named shipped models, one default, checked by sha256 before use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from histoeq.errors import HistoeqError, InputError
from histoeq.infer.model_index import default_model_name, file_sha256, find_model, read_index, resolve_model
from tests.conftest import REPO, run_cli


def _folder(tmp_path: Path, default: str = "a") -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.onnx").write_bytes(b"model a")
    (folder / "b.onnx").write_bytes(b"model b")
    entries = [{"name": n, "file": f"{n}.onnx", "sha256": file_sha256(folder / f"{n}.onnx")} for n in "ab"]
    (folder / "index.json").write_text(json.dumps({"default": default, "models": entries}))
    return folder


def test_the_shipped_index_names_an_existing_default_with_its_checksum():
    default, entries = read_index(REPO / "models")
    entry = find_model(None, [REPO / "models"])
    assert entry.name == default and entry.path.is_file()
    assert {e.path.name for e in entries} == {p.name for p in (REPO / "models").glob("*.onnx")}


def test_default_and_named_entries(tmp_path):
    folder = _folder(tmp_path, default="b")
    assert find_model(None, [folder]).path.name == "b.onnx"
    assert find_model("a", [folder]).path.name == "a.onnx"
    assert default_model_name([folder]) == "b"
    with pytest.raises(InputError, match="no model named 'c'"):
        find_model("c", [folder])


def test_a_replaced_file_is_refused(tmp_path):
    folder = _folder(tmp_path)
    (folder / "a.onnx").write_bytes(b"something else")
    with pytest.raises(InputError, match="sha256"):
        find_model("a", [folder])


def test_an_index_whose_default_is_not_listed_is_refused(tmp_path):
    folder = _folder(tmp_path, default="zzz")
    with pytest.raises(InputError, match="default 'zzz'"):
        read_index(folder)


def test_a_path_is_taken_as_given(tmp_path):
    assert resolve_model(tmp_path / "x.onnx") == tmp_path / "x.onnx"
    with pytest.raises(HistoeqError):
        find_model(None, [tmp_path])


def test_predict_help_shows_the_default_model(capsys):
    code, out, _ = run_cli(["predict", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    default = read_index(REPO / "models")[0]
    assert f"default: {default}" in text or f"default: ({default})" in text
