"""Checkpoint files: one self-describing dict per file, written atomically, read without unpickling code.

A checkpoint must be enough to rebuild and use a model on its own (export, eval, predict), so besides the weights it
carries the model config, the classes, the tile geometry and the normalisation the model was trained with. Files are
written to a temporary name and renamed (a crash never leaves a half-written ``best.pt``) and read with
``torch.load(weights_only=True)`` so that opening a checkpoint from elsewhere cannot execute code.

Payload keys (version 1)::

    format="histoeq-checkpoint", version=1, model_config, state_dict, classes, tile_px, mpp,
    normalisation={"mean": [...], "std": [...]}, data_hash, fraction_hash, metrics={"val": {...}}, epoch,
    histoeq_version, kernel_basis="gram-schmidt"
    # last.pt only, for --resume:
    optimizer, scheduler, sampler, rng, history
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from histoeq import models
from histoeq.atomic import write_bytes_atomic
from histoeq.errors import HistoeqError, InputError, clip
from histoeq.nn.conv import migrate_legacy_steerable

FORMAT = "histoeq-checkpoint"
VERSION = 1
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
REQUIRED_KEYS = ("model_config", "state_dict", "classes", "tile_px", "normalisation")
# What steerable (se2) coefficients are coefficients of (histoeq.nn.kernels.steerable_coefficients). A checkpoint
# without the key used the legacy SVD basis, whose signs belong to the LAPACK build that trained it.
KERNEL_BASIS = "gram-schmidt"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` to `path` atomically (temporary file in the same folder, then `os.replace`)."""
    path = Path(path)
    # Serialised in memory first: torch's C++ writer reports a full disk as an opaque RuntimeError ("unexpected
    # pos ..."), a plain file write as the OSError that `write_bytes_atomic` names the output by.
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **payload}, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); missing, corrupt or foreign files raise `InputError`."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "checkpoint not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a checkpoint file (.pt)")
    if path.stat().st_size == 0:
        raise InputError(path, "not a histoeq checkpoint (zero-byte file)")
    check_archive_budget(path)
    try:
        with warnings.catch_warnings():  # torch warns about legacy (non-zip) files before failing on them
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        text = str(exc)
        if "WeightsUnpickler error:" in text:  # torch's advice to load with weights_only=False is not ours to give
            why = clip(text.split("WeightsUnpickler error:", 1)[1].split(". ", 1)[0], 120)
            raise InputError(path, f"not a histoeq checkpoint: it holds Python objects besides tensors and plain "
                                   f"data ({why}), and checkpoints are loaded without running code") from None
        raise InputError(path, f"not a readable checkpoint ({clip(text, 120) or type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(path, "not a histoeq checkpoint (missing format marker)")
    try:
        version = int(payload.get("version", 0))
    except (TypeError, ValueError):
        raise InputError(path, f"checkpoint version {payload.get('version')!r} is not a number") from None
    if version > VERSION:
        raise InputError(path, f"checkpoint version {version} is newer than this histoeq supports")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise InputError(path, f"checkpoint lacks {', '.join(missing)}")
    check_payload(payload, path)
    return payload


# torch.save stores zip members uncompressed, so a checkpoint unpacks to about its own size; beyond this margin the
# zip directory promises memory the file does not hold (a zip bomb: 3 MB that torch.load would inflate to 3.4 GB).
ARCHIVE_SLACK_BYTES = 64 << 20


def check_archive_budget(path: Path) -> None:
    """Refuse a zip checkpoint whose directory says it unpacks to far more than the file's size, before torch.load
    allocates it. Legacy (non-zip) files pass; torch.load reports them."""
    import zipfile

    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    if unpacked > 2 * size + ARCHIVE_SLACK_BYTES:
        raise InputError(path, f"checkpoint archive unpacks to {unpacked / 2**30:.1f} GiB from {size / 2**20:.1f} MiB "
                               f"(at most twice the file size plus {ARCHIVE_SLACK_BYTES >> 20} MiB is accepted: "
                               "torch.save does not compress)")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_payload(payload: Mapping[str, Any], path: str | Path | None, weights: bool = True) -> None:
    """Check the types of the fields that rebuilding, evaluating and exporting a model rely on, so that a damaged
    or hand-edited checkpoint is one `InputError` naming `path` here rather than a traceback deep in torch.
    ``weights=False`` skips model_config/state_dict (an in-memory model's info has none).

    ``mpp`` may be missing or null (a dataset imported without ``--mpp``); `histoeq export` requires it."""
    for key in ("model_config", "state_dict") if weights else ():
        if not isinstance(payload.get(key), Mapping):
            raise InputError(path, f"checkpoint {key} is not a mapping (got {type(payload.get(key)).__name__})")
    classes = payload.get("classes")
    if not isinstance(classes, list | tuple) or len(classes) < 2 or not all(isinstance(c, str | int) for c in classes):
        raise InputError(path, f"checkpoint classes must be a list of at least two names (got {classes!r:.60})")
    tile_px = payload.get("tile_px")
    if isinstance(tile_px, bool) or not isinstance(tile_px, int) or tile_px < 4:
        raise InputError(path, f"checkpoint tile_px must be a whole number of pixels, at least 4 (got {tile_px!r:.40})")
    mpp = payload.get("mpp")
    if mpp is not None and not (_is_number(mpp) and mpp > 0):
        raise InputError(path, f"checkpoint mpp must be a positive number of µm/px (got {mpp!r:.40})")
    norm = payload.get("normalisation")
    for key in ("mean", "std"):
        values = norm.get(key) if isinstance(norm, Mapping) else None
        if not isinstance(values, list | tuple) or len(values) != 3 or not all(_is_number(v) for v in values):
            raise InputError(path, f"checkpoint normalisation {key} must be three numbers (got {values!r:.60})")
    if not all(v > 0 for v in norm["std"]):
        raise InputError(path, f"checkpoint normalisation std must be positive (got {norm['std']!r})")


def resolve_checkpoint(run_or_ckpt: str | Path, name: str = BEST_NAME) -> Path:
    """A run folder means its `name` (best.pt by default); a file is used as is."""
    path = Path(run_or_ckpt)
    if path.is_dir():
        candidate = path / name
        if not candidate.exists():
            raise InputError(path, f"run folder has no {name} (did training finish at least one epoch?)")
        return candidate
    return path


def is_legacy_basis(payload: Mapping[str, Any]) -> bool:
    """True for a checkpoint whose steerable layers use the legacy SVD basis (saved before `KERNEL_BASIS`)."""
    return payload.get("kernel_basis") != KERNEL_BASIS


def load_state(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path,
               legacy_basis: bool = False) -> nn.Module:
    """Load weights strictly; a state dict from another architecture becomes a one-line `InputError`.

    ``legacy_basis``: the steerable coefficients are in the legacy SVD basis and are rewritten for the current one
    (exact for checkpoints trained with this machine's LAPACK build, see `migrate_legacy_steerable`).
    """
    if legacy_basis:
        state_dict = migrate_legacy_steerable(model, state_dict)
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        detail = clip(str(exc)) or type(exc).__name__
        raise InputError(path, f"checkpoint weights do not fit the model ({detail})") from None
    return model


def build_model(model_config: dict[str, Any], path: str | Path = "<config>") -> nn.Module:
    """Create the model described by a checkpoint's `model_config` (unknown names become `InputError`)."""
    config = dict(model_config)
    name = config.pop("name", None)
    if name is None:
        raise InputError(path, "checkpoint model_config has no model name")
    try:
        return models.create(name, **config)
    except InputError:
        raise
    except HistoeqError as exc:  # e.g. an unknown model name: the registry does not know the file
        raise InputError(path, str(exc)) from None
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"cannot rebuild model {name!r} from checkpoint ({exc})") from None


def upgrade_kernel_basis(run_or_ckpt: str | Path) -> bool:
    """Rewrite a legacy checkpoint (steerable coefficients in the SVD basis of this machine's LAPACK build) in the
    current basis, atomically, so that it means the same filters everywhere. False when there was nothing to do.
    Only for files trained with this machine's build: elsewhere their filters are already lost."""
    path = resolve_checkpoint(run_or_ckpt)
    payload = load_checkpoint(path)
    if not is_legacy_basis(payload):
        return False
    model = build_model(payload["model_config"], path)
    load_state(model, payload["state_dict"], path, legacy_basis=True)
    payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload["kernel_basis"] = KERNEL_BASIS
    save_checkpoint(path, payload)
    return True


def load_model(run_or_ckpt: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a run folder (its best.pt) or a checkpoint file; returns (model in eval mode, payload)."""
    path = resolve_checkpoint(run_or_ckpt)
    payload = load_checkpoint(path)
    model = build_model(payload["model_config"], path)
    load_state(model, payload["state_dict"], path, legacy_basis=is_legacy_basis(payload))
    model.eval()
    return model, payload
