"""What a predict ``--out`` folder holds: one model (by sha256) and one set of result-affecting options.

Why: predictions of two models (or two tile grids) side by side in one folder look complete and are wrong; a rerun
that quietly kept the old model's files did exactly that. The folder's settings file is created exclusively, so of
two jobs started at once with different models the second refuses, while the shards of one array job (same model,
same options) agree and share the folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from histoeq.atomic import write_text_atomic
from histoeq.errors import InputError
from histoeq.infer.model_index import file_sha256

SETTINGS_NAME = ".histoeq-predict.json"
# What changes the tiles, their values or the regions; the defaults stand in for options older records lack.
RESULT_OPTIONS = ("stride_px", "mpp", "tissue_threshold", "context", "region_threshold")
OPTION_DEFAULTS = {"context": "none", "region_threshold": 0.5}


@dataclass(frozen=True)
class PredictSettings:
    """The model file's sha256 and the options that change the tiles or their probabilities (their effective
    values), with where the threshold and context came from ("option", "model" or "default"; informative only:
    the same value from another source gives the same outputs)."""

    model_sha256: str
    model: str
    options: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, model_path: Path, options: Any, sources: dict[str, str] | None = None) -> PredictSettings:
        return cls(file_sha256(model_path), str(model_path), {k: getattr(options, k) for k in RESULT_OPTIONS},
                   dict(sources or {}))

    def differences(self, other: dict[str, Any]) -> list[str]:
        """Human-readable differences from a recorded settings dict."""
        found = []
        if other.get("model_sha256") != self.model_sha256:
            found.append(f"model {other.get('model')} (sha256 {str(other.get('model_sha256'))[:12]}…)")
        recorded = other.get("options") if isinstance(other.get("options"), dict) else {}
        found += [f"{k}={recorded.get(k)!r}" for k in RESULT_OPTIONS if recorded.get(k) != self.options.get(k)]
        return found


def claim_folder(out: Path, settings: PredictSettings, overwrite: bool) -> None:
    """Record ``settings`` as what ``out`` holds, or refuse when it holds another model's or options' predictions
    (unless ``overwrite``, which takes the folder over)."""
    path = out / SETTINGS_NAME
    text = json.dumps(asdict(settings), indent=2, sort_keys=True)
    out.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            recorded = {}
        differs = settings.differences(recorded if isinstance(recorded, dict) else {})
        if not differs:
            return
        if not overwrite:
            raise InputError(out, f"holds predictions made with {', '.join(differs)}; pass --overwrite to replace "
                                  "them, or choose another --out") from None
        write_text_atomic(path, text)
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def slide_differences(record_file: Path, settings: PredictSettings) -> list[str]:
    """How the slide's existing record differs from ``settings`` (empty when there is none or it agrees). Records
    written before settings were recorded are compared by model path and the options they hold."""
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict):
        return []
    if isinstance(record.get("settings"), dict):
        return settings.differences(record["settings"])
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    options = record.get("options") if isinstance(record.get("options"), dict) else {}
    found = [] if str(model.get("path")) == settings.model else [f"model {model.get('path')}"]
    return found + [f"{k}={options.get(k, OPTION_DEFAULTS.get(k))!r}" for k in RESULT_OPTIONS
                    if options.get(k, OPTION_DEFAULTS.get(k)) != settings.options.get(k)]
