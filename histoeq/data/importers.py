"""Import existing patch collections into the histoeq dataset format (`histoeq import`).

Layouts understood (checked in this order):

* PCam: ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` (needs the optional ``h5py``: ``pip install
  histoeq[pcam]``), see `histoeq.data.pcam`.
* ``labels.csv`` with a path column and a label column, optional patient and split columns. The IDC/Kaggle file
  (``path,label_idc,patient_id,split``) and the generic ``path,label,patient[,split]`` both work.
* IDC/Kaggle folders ``<patient>/<class>/*.png`` (no labels.csv): patient from the first level, class from the second.
* ImageFolder ``<class>/**/*.png``: patient from the file-name prefix before the first ``_`` (Kaggle naming),
  else the file's parent folder.

Patches whose size differs from the common size (IDC has ~1 % edge crops, some 50x1) are skipped and counted, or
with ``pad=True`` padded white on the right/bottom (they are crops at the slide's right/bottom edge). Decoding runs
on a thread pool with OpenCV (which releases the GIL), a few times faster than PIL for small PNGs.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from histoeq.data.dataset import DatasetWriter, PatchDataset
from histoeq.data.pcam import find_pcam, import_pcam
from histoeq.errors import InputError
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide.pixels import to_rgb8

# OpenCV logs every malformed image on stderr from C++; unreadable images are counted in the dataset's skipped.csv.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_XY = re.compile(r"_x(\d+)_y(\d+)")
CHUNK = 1024
IDC_CLASSES = ["non-IDC", "IDC"]
MAX_CLASSES = 1000
IDC_MPP = 4.0  # "downsampled to 2.5x (about 4 um/px)" (Janowczyk & Madabhushi 2016)


def _read_rgb(path: Path) -> np.ndarray | None:
    if not path.is_file():  # cv2.imread would print a warning on stderr for each one
        return None
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        return None
    if arr.ndim == 3 and arr.shape[2] >= 3:  # OpenCV gives BGR(A)
        arr = arr[:, :, [2, 1, 0, 3][: arr.shape[2]]]
    return to_rgb8(arr)


def _table_from_labels_csv(folder: Path, csv_path: Path) -> tuple[pd.DataFrame, list[str]]:
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(csv_path, f"not a readable CSV ({str(exc).strip()[:100]})") from None
    cols = {c.lower().strip(): c for c in table.columns}
    path_col = cols.get("path") or cols.get("file") or cols.get("filename")
    label_col = cols.get("label") or next((cols[c] for c in cols if c.startswith("label")), None)
    if path_col is None or label_col is None:
        raise InputError(csv_path, "needs a 'path' column and a 'label' column (e.g. path,label,patient[,split])")
    patient_col = cols.get("patient") or cols.get("patient_id") or cols.get("case") or cols.get("case_id")
    split_col = cols.get("split")
    if table.empty:
        raise InputError(csv_path, "no rows (only a header)")
    labels_raw = table[label_col].str.strip()
    if (labels_raw == "").any():
        raise InputError(csv_path, f"empty label on line {int(np.flatnonzero(labels_raw == '')[0]) + 2}")
    integer = labels_raw.str.fullmatch(r"[+-]?\d+")
    if integer.any() and not integer.all():  # e.g. "1.5" or "maybe" among 0/1: a typo, not a new class
        line = int(np.flatnonzero(~integer.to_numpy())[0]) + 2
        raise InputError(csv_path, f"labels mix class indices and names: {labels_raw.iloc[line - 2]!r} on line {line} "
                                   f"among integers like {labels_raw[integer].iloc[0]!r}")
    if label_col.lower() == "label_idc" and set(labels_raw) <= {"0", "1"}:
        classes = list(IDC_CLASSES)
        labels = labels_raw.astype(int)
    elif integer.all():
        classes, labels = _integer_classes(labels_raw, csv_path)
    else:
        classes = sorted(set(labels_raw))
        labels = labels_raw.map({c: i for i, c in enumerate(classes)})
    paths = table[path_col].map(lambda p: folder / p)
    out = pd.DataFrame({"file": paths, "label": labels,
                        "patient": table[patient_col] if patient_col else paths.map(_patient_from_name),
                        "split": table[split_col].str.strip().replace({"valid": "val", "validation": "val"})
                        if split_col else ""})
    bad = ~out["split"].isin(["train", "val", "test", ""])
    if bad.any():
        raise InputError(csv_path, f"unknown split value {out.loc[bad, 'split'].iloc[0]!r} (use train, val, test)")
    _check_rows(out, csv_path, patients_given=patient_col is not None)
    return out, classes


def _check_rows(table: pd.DataFrame, csv_path: Path, patients_given: bool) -> None:
    """Refuse a labels table that would train on what it tests: a patch listed twice (possibly with two labels), or
    a patient in two splits (patches of one patient are far more alike than patches of two, so such a test split
    measures memory, not generalisation). Patients are checked only when the table names them."""
    files = table["file"].map(str)
    repeated = files.duplicated(keep=False)
    if repeated.any():
        lines = np.flatnonzero(repeated.to_numpy())[:2] + 2
        raise InputError(csv_path, f"{Path(files.iloc[lines[0] - 2]).name} is listed twice (lines {lines[0]} and "
                                   f"{lines[1]})")
    if not patients_given:
        return
    marked = table[(table["split"] != "") & (table["patient"].astype(str).str.strip() != "")]
    splits = marked.groupby(marked["patient"].astype(str))["split"].unique()
    leaking = splits[splits.map(len) > 1]
    if len(leaking):
        patient, splits_of = leaking.index[0], ", ".join(sorted(leaking.iloc[0]))
        raise InputError(csv_path, f"patient {patient} is in more than one split ({splits_of}); split by patient so "
                                   "that no test patient is seen in training")


def _integer_classes(labels_raw: pd.Series, csv_path: Path) -> tuple[list[str], pd.Series]:
    """Integer labels are class indices 0..max (named "0".."max"), so the same number means the same class in every
    import; a negative label or one past `MAX_CLASSES` is refused rather than shifting or exploding the class list."""
    values = labels_raw.map(int)  # Python ints: no overflow on absurd values
    low, high = int(values.idxmin()), int(values.idxmax())
    if values[low] < 0:
        raise InputError(csv_path, f"label {values[low]} on line {low + 2} is negative "
                                   "(integer labels are class indices 0, 1, ...)")
    if values[high] >= MAX_CLASSES:
        raise InputError(csv_path, f"label {values[high]} on line {high + 2} would make {values[high] + 1} classes "
                                   f"(integer labels are class indices 0, 1, ...; at most {MAX_CLASSES} classes)")
    return [str(i) for i in range(int(values[high]) + 1)], values.astype(np.int64)


def _patient_from_name(path: Path) -> str:
    stem = Path(path).stem
    return stem.split("_")[0] if "_" in stem else Path(path).parent.name


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _table_from_folders(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    top = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not top:
        raise InputError(folder, "no labels.csv, no class sub-folders and no PCam .h5 files: nothing to import")
    second = {q.name for p in top for q in p.iterdir() if q.is_dir()}
    nested = bool(second) and all(any(q.is_dir() for q in p.iterdir()) for p in top) and len(second) < len(top)
    rows = []
    if nested:  # <patient>/<class>/*
        classes = sorted(second, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
        for patient in top:
            for k, cls in enumerate(classes):
                for f in _images_under(patient / cls) if (patient / cls).is_dir() else []:
                    rows.append((f, k, patient.name))
    else:  # ImageFolder <class>/**/*
        classes = [p.name for p in top]
        for k, cls_dir in enumerate(top):
            rows += [(f, k, _patient_from_name(f)) for f in _images_under(cls_dir)]
    if not rows:
        raise InputError(folder, "no images found in the class sub-folders")
    table = pd.DataFrame(rows, columns=["file", "label", "patient"])
    table["split"] = ""
    return table, classes


def _tile_size(files: list[Path]) -> int:
    """The most common square size among the first images (the dataset's patch size)."""
    sizes = Counter()
    for f in files[:256]:
        img = _read_rgb(f)
        if img is not None and img.shape[0] == img.shape[1]:
            sizes[img.shape[0]] += 1
    if not sizes:
        raise InputError(files[0].parent, "could not read any square image to learn the patch size")
    return sizes.most_common(1)[0][0]


def import_folder(folder: Path, out: Path, pad: bool = False, overwrite: bool = False, workers: int = 2,
                  mpp: float | None = None, progress: ProgressFn = null_progress) -> dict:
    """Import FOLDER (labels.csv, class folders or PCam) into dataset `out`; returns counts, skips and speed.

    `mpp` (µm/px of the patches) is recorded for models and slide inference; patch files do not carry it. Known
    layouts default to their published scale: IDC (label_idc column) 4.0, PCam 0.972.
    """
    folder = Path(folder)
    if workers < 1:
        raise InputError(None, f"--workers must be at least 1, got {workers}")
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise InputError(None, f"--mpp must be a finite positive number, got {mpp}")
    if not folder.is_dir():
        raise InputError(folder, "no such folder" if not folder.exists() else "not a folder")
    start = time.perf_counter()
    if find_pcam(folder):
        return import_pcam(folder, out, overwrite=overwrite, mpp=mpp, progress=progress)
    labels_csv = folder / "labels.csv"
    if labels_csv.exists() and not labels_csv.is_file():  # else it would pass for a class folder
        raise InputError(labels_csv, "is a folder, not a labels table")
    if labels_csv.is_file():
        table, classes = _table_from_labels_csv(folder, labels_csv)
        layout = "labels.csv"
        if mpp is None and classes == IDC_CLASSES:
            mpp = IDC_MPP
    else:
        table, classes = _table_from_folders(folder)
        layout = "class folders"
    files = table["file"].tolist()
    tile = _tile_size(files)
    provenance = {"command": "import", "folder": str(folder), "layout": layout, "pad": pad, "mpp": mpp}
    decode: Callable[[Path], np.ndarray | None] = _read_rgb
    with DatasetWriter(out, tile_px=tile, classes=classes, mpp=mpp, provenance=provenance,
                       overwrite=overwrite) as writer, ThreadPoolExecutor(max_workers=workers) as pool:
        for s in range(0, len(files), CHUNK):
            chunk = table.iloc[s:s + CHUNK]
            images = list(pool.map(decode, chunk["file"], chunksize=64))
            keep_imgs, keep_rows = [], []
            for img, rec in zip(images, chunk.itertuples(index=False)):
                source = str(rec.file.relative_to(folder)) if rec.file.is_relative_to(folder) else str(rec.file)
                if img is None:
                    writer.skip("missing or unreadable image" if rec.file.exists() else "missing file", item=source)
                    continue
                if img.shape[:2] != (tile, tile):
                    if not pad or img.shape[0] > tile or img.shape[1] > tile:
                        writer.skip(f"size not {tile}x{tile}", item=source)
                        continue
                    canvas = np.full((tile, tile, 3), 255, np.uint8)
                    canvas[: img.shape[0], : img.shape[1]] = img
                    img = canvas
                    writer.provenance["padded"] = writer.provenance.get("padded", 0) + 1
                m = _XY.search(rec.file.name)
                keep_imgs.append(img)
                keep_rows.append({"label": int(rec.label), "patient": str(rec.patient), "split": rec.split,
                                  "x": int(m.group(1)) if m else -1, "y": int(m.group(2)) if m else -1,
                                  "source": source})
            if keep_imgs:
                writer.add(np.stack(keep_imgs), keep_rows)
            done = min(s + CHUNK, len(files))
            progress("import", done, len(files), f"{done / max(time.perf_counter() - start, 1e-9):.0f} img/s")
    seconds = time.perf_counter() - start
    meta = writer.meta
    return {"out": str(out), "layout": layout, "classes": classes, "n": meta["n"], "tile_px": tile,
            "padded": meta["provenance"].get("padded", 0),
            "splits": meta["splits"], "counts": meta["class_counts"], "skipped": meta["skipped"],
            "split_counts": _split_counts(out), "seconds": seconds, "images_per_s": len(files) / max(seconds, 1e-9)}


def _split_counts(out: Path) -> dict[str, dict[str, int]]:
    ds = PatchDataset.open(out)
    table = ds.index.assign(split=ds.index["split"].replace("", "none"))
    return {split: {ds.classes[k]: int(n) for k, n in grp["label"].value_counts().sort_index().items()}
            for split, grp in table.groupby("split")}
