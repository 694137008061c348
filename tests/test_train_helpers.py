"""Helpers shared by the train / eval / sweep tests: a small real IDC dataset built once per session.

Not a test module of its own; it lives under a ``test_train*`` name because that is the train area's test namespace.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

_BUILT: dict[tuple, Path] = {}
SMALL_COUNTS = {"train": 160, "val": 64, "test": 48}


def build_small_idc(idc_dir: Path, out: Path, counts: dict[str, int] | None = None, seed: int = 0,
                    with_slides: bool = True) -> Path:
    """A histoeq dataset of a few hundred real 50 px IDC patches (about 1/3 positive) with the real splits.

    Built with the data engineer's `DatasetWriter`, so it has exactly the on-disk format `histoeq import` writes;
    `slide` holds the patient id (its reassembled slide is ``idc/slides/<patient>.tiff`` for val/test patients).
    """
    counts = counts or SMALL_COUNTS
    key = (str(idc_dir), str(out), tuple(sorted(counts.items())), seed, with_slides)
    if key in _BUILT and (_BUILT[key] / "meta.json").exists():
        return _BUILT[key]
    from histoeq.data.dataset import DatasetWriter

    labels = pd.read_csv(idc_dir / "labels.csv")
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for split, n in counts.items():
        part = labels[labels["split"] == split]
        for label, share in ((1, n // 3), (0, n - n // 3)):
            pool = part[part["label_idc"] == label]
            picked = pool.iloc[rng.permutation(len(pool))]
            taken = 0
            for rec in picked.itertuples():
                if taken == share:
                    break
                img = np.asarray(Image.open(idc_dir / rec.path).convert("RGB"))
                if img.shape != (50, 50, 3):
                    continue  # ~1 % edge crops
                name = Path(rec.path).stem
                x = int(name.split("_x")[1].split("_")[0])
                y = int(name.split("_y")[1].split("_")[0])
                images.append(img)
                rows.append({"label": label, "patient": str(rec.patient_id), "slide": str(rec.patient_id),
                             "x": x, "y": y, "mpp": 4.0, "split": split, "source": rec.path})
                taken += 1
    with DatasetWriter(out, tile_px=50, classes=["non-IDC", "IDC"], mpp=4.0,
                       provenance={"source": str(idc_dir), "slides": str(idc_dir / "slides")} if with_slides
                       else {}) as writer:
        writer.add(np.stack(images), rows)
    _BUILT[key] = out
    return out


def small_threads() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def small_idc_fixture_path(idc_dir: Path, tmp_path_factory) -> Path:  # noqa: ANN001 (pytest type)
    """The session's small IDC dataset (built on first use, shared by every train/eval/sweep test module)."""
    return build_small_idc(idc_dir, tmp_path_factory.getbasetemp() / "small_idc")


FAST_TRAIN = ["--epochs", "1", "--max-steps", "2", "--batch-size", "32", "--width", "4", "--device", "cpu"]
