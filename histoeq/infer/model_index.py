"""The shipped models' index (``models/index.json``): named entries, one of them the default.

Why an index rather than "the first ``*.onnx`` in the folder": adding a second file would silently change what
``histoeq predict`` uses, and a user could not tell from ``--help`` which model a run will take. Each entry
records the file's sha256, so a model replaced by hand is noticed before any slide is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from histoeq.errors import HistoeqError, InputError

INDEX_NAME = "index.json"
MAX_INDEX_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelEntry:
    """One shipped model: its name (what ``--model`` accepts), file, checksum, card and task."""

    name: str
    path: Path
    sha256: str
    card: str = ""
    task: str = ""


def model_folders() -> list[Path]:
    """Where shipped models are looked for: ``$HISTOEQ_MODEL_DIR`` (the Docker image sets it), ``./models``, and
    the project checkout's ``models/``."""
    folders = [Path.cwd() / "models", Path(__file__).resolve().parents[2] / "models"]
    if os.environ.get("HISTOEQ_MODEL_DIR"):
        folders.insert(0, Path(os.environ["HISTOEQ_MODEL_DIR"]))
    return folders


def read_index(folder: Path) -> tuple[str, list[ModelEntry]]:
    """(default name, entries) of ``folder/index.json``; a malformed index is a one-line error naming it."""
    path = folder / INDEX_NAME
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise InputError(path, f"model index larger than {MAX_INDEX_BYTES // 1024} KiB")
        record = json.loads(path.read_text(encoding="utf-8"))
        entries = [ModelEntry(name=str(e["name"]), path=folder / str(e["file"]), sha256=str(e["sha256"]).lower(),
                              card=str(e.get("card", "")), task=str(e.get("task", ""))) for e in record["models"]]
        default = str(record["default"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a readable model index ({type(exc).__name__}: {exc})") from None
    if default not in {e.name for e in entries}:
        raise InputError(path, f"default {default!r} is not one of its models")
    return default, entries


def _indexed_folders(folders: list[Path] | None) -> list[Path]:
    return [f for f in (folders if folders is not None else model_folders()) if (f / INDEX_NAME).is_file()]


def find_model(name: str | None = None, folders: list[Path] | None = None) -> ModelEntry:
    """The entry called ``name`` (the default entry when None) in the first folder that has an index; the file
    must exist and match its recorded sha256."""
    indexed = _indexed_folders(folders)
    if not indexed:
        where = ", ".join(str(f) for f in (folders if folders is not None else model_folders()))
        raise HistoeqError(f"no model given and no models/{INDEX_NAME} found (looked in {where}); pass --model "
                           "model.onnx")
    default, entries = read_index(indexed[0])
    wanted = default if name is None else name
    entry = next((e for e in entries if e.name == wanted), None)
    if entry is None:
        raise InputError(indexed[0] / INDEX_NAME,
                         f"no model named {wanted!r} (has {', '.join(e.name for e in entries)})")
    if not entry.path.is_file():
        raise InputError(entry.path, f"listed in {INDEX_NAME} as {entry.name!r} but missing")
    digest = file_sha256(entry.path)
    if digest != entry.sha256:
        raise InputError(entry.path, f"sha256 {digest[:12]}… differs from the {entry.sha256[:12]}… recorded in "
                                     f"{INDEX_NAME}: the file was replaced; update the index or pass the file itself")
    return entry


def default_model_name(folders: list[Path] | None = None) -> str:
    """The default entry's name for ``--help`` (a placeholder when no index can be read)."""
    try:
        indexed = _indexed_folders(folders)
        return read_index(indexed[0])[0] if indexed else "none installed"
    except HistoeqError:
        return "unreadable models/index.json"


def resolve_model(model: str | Path | None) -> Path:
    """``--model``: a file path as given, else a name in the index; None is the index's default."""
    if model is not None and (Path(model).suffix == ".onnx" or Path(model).exists()):
        return Path(model)
    return find_model(None if model is None else str(model)).path


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
