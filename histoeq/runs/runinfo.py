"""What a run folder records about itself so a result can be traced and reproduced.

`run.json` holds every option, the dataset hash, the hash of the chosen fraction ids (the ids themselves are in
`fraction_ids.json`), library versions and the git commit of the code; `metrics.jsonl` one line per epoch. Both are
written atomically (temp name + rename) so an interrupted run never leaves a truncated JSON file behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

from histoeq.atomic import write_text_atomic
from histoeq.errors import InputError

RUN_JSON = "run.json"
METRICS_JSONL = "metrics.jsonl"
FRACTION_IDS = "fraction_ids.json"
LIBRARIES = ("torch", "numpy", "pandas", "scikit-learn", "scipy", "albumentations", "onnx", "onnxruntime")


def write_json(path: Path, record: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(record, indent=2, default=_json_default, allow_nan=True) + "\n")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in records))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object written by histoeq; a damaged or foreign file is an InputError naming it."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(path, "not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(record, dict):
        raise InputError(path, f"not a histoeq record (a JSON {type(record).__name__}, not an object)")
    return record


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("histoeq", *LIBRARIES):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    # The build tag (+cpu, +cu128) is only in torch.__version__; imported here so that reading and writing run
    # records does not load torch.
    import torch

    versions["torch"] = torch.__version__
    return versions


def git_commit() -> dict[str, Any]:
    """Commit of the checkout histoeq runs from, and whether it has uncommitted changes (None outside git)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": head, "dirty": bool(dirty)}


def dataset_hash(dataset_path: Path) -> str:
    """sha256 of the dataset's index.csv and meta.json: identifies rows, labels, splits and normalisation
    without reading the whole image array (meta.json carries the pixel statistics)."""
    digest = hashlib.sha256()
    for name in ("meta.json", "index.csv"):
        with open(Path(dataset_path) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
