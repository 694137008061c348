"""PatchCamelyon (PCam) HDF5 import: ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``.

Optional: needs ``h5py`` (``pip install histoeq[pcam]``); the rest of histoeq does not. PCam patches are 96x96 px
from Camelyon16 level 2 (40x scans downsampled 4x, about 0.972 µm/px); the label is whether the central 32x32 px
contain tumour. If the ``*_meta.csv`` files are present their ``wsi`` column is used as the patient, so patient-level
analyses stay possible.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from histoeq.data.dataset import DatasetWriter
from histoeq.errors import HistoeqError, InputError
from histoeq.progress import ProgressFn, null_progress

PCAM_SPLITS = {"train": "train", "valid": "val", "test": "test"}
PCAM_MPP = 0.972  # level 2 of 0.243 µm/px Camelyon16 scans
CHUNK = 4096


def _file(folder: Path, split: str, kind: str) -> Path:
    return folder / f"camelyonpatch_level_2_split_{split}_{kind}.h5"


def find_pcam(folder: Path) -> list[str]:
    """The PCam splits whose x and y files are both in `folder`."""
    return [s for s in PCAM_SPLITS if _file(folder, s, "x").is_file() and _file(folder, s, "y").is_file()]


def import_pcam(folder: Path, out: Path, overwrite: bool = False, mpp: float | None = None,
                progress: ProgressFn = null_progress) -> dict:
    try:
        import h5py
    except ModuleNotFoundError:
        raise HistoeqError("importing PCam needs h5py: pip install 'histoeq[pcam]'") from None
    start = time.perf_counter()
    splits = find_pcam(folder)
    provenance = {"command": "import", "folder": str(folder), "layout": "pcam-h5", "splits": splits}
    with DatasetWriter(out, tile_px=96, classes=["normal", "tumour"], mpp=mpp or PCAM_MPP, provenance=provenance,
                       overwrite=overwrite) as writer:
        for split in splits:
            xf, yf = _file(folder, split, "x"), _file(folder, split, "y")
            try:
                with h5py.File(xf, "r") as hx, h5py.File(yf, "r") as hy:
                    x, y = hx["x"], hy["y"]
                    if x.ndim != 4 or x.shape[1:] != (96, 96, 3) or len(y) != len(x):
                        raise InputError(xf, f"unexpected PCam shapes x{x.shape} y{y.shape}")
                    meta_csv = folder / f"camelyonpatch_level_2_split_{split}_meta.csv"
                    patients = (pd.read_csv(meta_csv)["wsi"].astype(str).to_numpy() if meta_csv.is_file()
                                else np.full(len(x), ""))
                    for s in range(0, len(x), CHUNK):
                        imgs = np.asarray(x[s:s + CHUNK], dtype=np.uint8)
                        labels = np.asarray(y[s:s + CHUNK]).reshape(len(imgs), -1)[:, 0]
                        rows = [{"label": int(lab), "patient": patients[s + i] if s + i < len(patients) else "",
                                 "split": PCAM_SPLITS[split], "source": f"{xf.name}[{s + i}]"}
                                for i, lab in enumerate(labels)]
                        writer.add(imgs, rows)
                        progress(f"import {split}", s + len(imgs), len(x), "")
            except OSError as exc:
                raise InputError(xf, f"not a readable HDF5 file ({str(exc)[:100]})") from None
            except KeyError as exc:
                raise InputError(xf, f"missing dataset {exc} in the HDF5 file") from None
    meta = writer.meta
    return {"out": str(out), "layout": "pcam-h5", "classes": meta["classes"], "n": meta["n"], "tile_px": 96,
            "padded": 0, "splits": meta["splits"], "counts": meta["class_counts"], "skipped": meta["skipped"],
            "split_counts": {}, "seconds": time.perf_counter() - start,
            "images_per_s": meta["n"] / max(time.perf_counter() - start, 1e-9)}
