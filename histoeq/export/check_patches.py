"""Tiles to verify an exported model on: real IDC patches when the shared data is present, else synthetic ones.

Real H&E patches matter: random noise hides numerical problems that only show on the smooth, saturated colours of
stained tissue (and vice versa), so synthetic tiles are a fallback, and the export metadata records which was used.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image


def default_idc_dir() -> Path | None:
    """``$HISTOEQ_SHARED_DATA/idc`` or ``<repo>/../shared/data/idc``, when it holds ``labels.csv``."""
    candidates = []
    if os.environ.get("HISTOEQ_SHARED_DATA"):
        candidates.append(Path(os.environ["HISTOEQ_SHARED_DATA"]) / "idc")
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "idc")
    return next((c for c in candidates if (c / "labels.csv").exists()), None)


def idc_patches(tile_px: int, count: int = 64, idc_dir: Path | None = None) -> np.ndarray | None:
    """Up to `count` full-size validation patches (half of each class), uint8 NHWC; None if unavailable."""
    idc_dir = idc_dir or default_idc_dir()
    if idc_dir is None:
        return None
    with open(idc_dir / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == "val"]
    tiles: list[np.ndarray] = []
    for label in ("0", "1"):
        chosen = sorted(r["path"] for r in rows if r["label_idc"] == label)
        step = max(1, len(chosen) // (2 * count))
        kept = 0
        for rel in chosen[::step]:
            if kept >= count // 2:
                break
            with Image.open(idc_dir / rel) as im:
                arr = np.asarray(im.convert("RGB"))
            if arr.shape[:2] != (50, 50):
                continue  # edge crops are skipped, not padded: verification wants real content
            if tile_px != 50:
                arr = np.asarray(Image.fromarray(arr).resize((tile_px, tile_px), Image.BILINEAR))
            tiles.append(arr)
            kept += 1
    return np.stack(tiles) if tiles else None


def synthetic_patches(tile_px: int, count: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth pink/purple blobs on white: enough structure for rotations to matter, deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:tile_px, 0:tile_px].astype(np.float32)
    out = np.empty((count, tile_px, tile_px, 3), dtype=np.uint8)
    for i in range(count):
        img = np.full((tile_px, tile_px, 3), 235.0, dtype=np.float32)
        for _ in range(6):
            cy, cx = rng.uniform(0, tile_px, 2)
            radius = rng.uniform(2, tile_px / 4)
            colour = rng.uniform([120, 40, 120], [230, 140, 210])
            weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))[..., None]
            img = img * (1 - weight) + colour * weight
        img += rng.normal(0, 6, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def check_patches(tile_px: int, count: int = 64, idc_dir: Path | None = None) -> tuple[np.ndarray, str]:
    """(uint8 NHWC tiles, source description) for export verification."""
    real = idc_patches(tile_px, count, idc_dir)
    if real is not None and len(real):
        return real, f"idc val patches ({len(real)})"
    return synthetic_patches(tile_px, count), f"synthetic ({count})"
