"""The one patch-dataset format every histoeq command reads and writes.

A dataset is a folder::

    DATASET/
      images.npy   uint8 array N x H x W x 3 (RGB), opened with ``mmap_mode="r"`` so training on 2 cores never
                   decodes PNGs and never loads the whole set into memory.
      index.csv    one row per image, row i <-> images[i]. Columns (at least):
                   id       int, == row position in images.npy
                   label    int class index into meta.json "classes"
                   patient  patient / case id (string; splits are made per patient, never per patch)
                   slide    slide name the patch came from (string, may be empty)
                   x, y     top-left corner of the patch in level-0 pixels of that slide (-1 when unknown)
                   mpp      micrometres per pixel of the stored patch (NaN when unknown)
                   split    "train" | "val" | "test" | "" (empty: no split given; see fractions.patient_splits)
                   source   where the patch came from (file path relative to the imported folder, or slide path)
    skipped.csv  (optional) source,reason of every named input that was not written (e.g. IDC edge crops)
    meta.json    {"format": "histoeq-dataset", "version": 1, "tile_px": H, "mpp": float | null,
                  "classes": [names...], "provenance": {...}, "splits": {"train": n, ...},
                  "normalisation": {"mean": [r, g, b], "std": [r, g, b]},   # train split, [0, 1] units
                  "skipped": {"reason": count, ...}}

Why this shape: one memory-mapped array is the fastest thing to feed a CPU training loop; a CSV index stays
readable with any tool; meta.json carries what a model needs to be reproducible (classes, scale, normalisation).

`DatasetWriter` writes a dataset atomically: everything goes into a hidden temp folder next to the target which is
renamed into place only when complete, so a failed import/extract never leaves a half-written DATASET.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2  # opencv-python-headless, installed with albumentations
import numpy as np
import pandas as pd

from histoeq.errors import HistoeqError, InputError

FORMAT_NAME = "histoeq-dataset"
FORMAT_VERSION = 1
INDEX_COLUMNS = ["id", "label", "patient", "slide", "x", "y", "mpp", "split", "source"]
SPLITS = ("train", "val", "test")
_NPY_HEADER_BYTES = 128  # fixed-size .npy header so the row count can be written when the data is complete


@dataclass
class PatchDataset:
    """An opened dataset: memory-mapped images plus the index and metadata."""

    path: Path
    images: np.ndarray
    index: pd.DataFrame
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> PatchDataset:
        """Open DATASET; `InputError` naming the folder when it is missing, not a dataset, or inconsistent."""
        path = Path(path)
        if not path.is_dir():
            raise InputError(path, "not a dataset folder (does not exist)" if not path.exists() else "not a folder")
        meta_path, index_path, images_path = path / "meta.json", path / "index.csv", path / "images.npy"
        for p in (meta_path, index_path, images_path):
            if not p.is_file():
                raise InputError(path, f"not a histoeq dataset ({p.name} missing)")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(meta_path, f"unreadable meta.json ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise InputError(meta_path, f"not a histoeq dataset (format is not {FORMAT_NAME!r})")
        if meta.get("version") != FORMAT_VERSION:
            raise InputError(meta_path, f"unsupported dataset version {meta.get('version')!r}")
        _check_meta(meta, meta_path)
        try:
            images = np.load(images_path, mmap_mode="r")
        except EOFError:  # np.load's answer to a zero-byte file
            raise InputError(images_path, "unreadable images.npy (empty file)") from None
        except (OSError, ValueError) as exc:
            raise InputError(images_path, f"unreadable images.npy ({exc})") from None
        try:
            index = pd.read_csv(index_path, dtype={"patient": str, "slide": str, "split": str, "source": str},
                                keep_default_na=False, na_values={"mpp": [""]})
        except (OSError, ValueError) as exc:
            raise InputError(index_path, f"unreadable index.csv ({exc})") from None
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise InputError(index_path, f"missing columns {', '.join(missing)}")
        tile = meta["tile_px"]
        if images.ndim != 4 or images.shape[1:] != (tile, tile, 3) or images.dtype != np.uint8:
            raise InputError(images_path, f"expected uint8 N x {tile} x {tile} x 3 (tile_px {tile} in meta.json), "
                                          f"got {images.dtype} {images.shape}")
        if len(index) != images.shape[0]:
            raise InputError(path, f"index.csv has {len(index)} rows but images.npy has {images.shape[0]}")
        index = _checked_index(index, index_path, len(meta["classes"]))
        return cls(path=path, images=images, index=index, meta=meta)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def tile_px(self) -> int:
        return int(self.meta["tile_px"])

    @property
    def mpp(self) -> float | None:
        return self.meta.get("mpp")

    @property
    def normalisation(self) -> dict[str, list[float]]:
        return self.meta["normalisation"]

    @property
    def labels(self) -> np.ndarray:
        return self.index["label"].to_numpy(dtype=np.int64)

    def split_ids(self, split: str) -> np.ndarray:
        """Ids (== rows of images) of one split; `InputError` when the dataset has no such rows."""
        ids = self.index.loc[self.index["split"] == split, "id"].to_numpy(dtype=np.int64)
        if ids.size == 0:
            present = sorted(s for s in self.index["split"].unique() if s)
            raise InputError(self.path, f"split {split!r} is empty (splits present: {', '.join(present) or 'none'})")
        return ids

    def with_splits(self, splits: pd.Series) -> PatchDataset:
        """The same images with another split column (e.g. a cross-validation fold); the file is not changed."""
        if len(splits) != len(self.index):
            raise ValueError(f"{len(splits)} split labels for {len(self.index)} rows")
        return replace(self, index=self.index.assign(split=np.asarray(splits, dtype=object)))

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _check_meta(meta: dict[str, Any], meta_path: Path) -> None:
    """Fail at open, naming meta.json, rather than deep inside training or ONNX with a KeyError or shape error."""
    tile = meta.get("tile_px")
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        raise InputError(meta_path, f"tile_px must be a positive integer, got {tile!r}")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise InputError(meta_path, f"classes must be a non-empty list of names, got {classes!r}")
    mpp = meta.get("mpp")
    if mpp is not None and not (_is_number(mpp) and mpp > 0):
        raise InputError(meta_path, f"mpp must be a positive number or null, got {mpp!r}")
    norm = meta.get("normalisation")
    for key in ("mean", "std"):
        values = norm.get(key) if isinstance(norm, dict) else None
        if not (isinstance(values, list) and len(values) == 3 and all(_is_number(v) for v in values)):
            raise InputError(meta_path, f"normalisation.{key} must be 3 numbers, got {values!r}")
    if not all(v > 0 for v in norm["std"]):
        raise InputError(meta_path, f"normalisation.std must be positive (it divides the pixels), got {norm['std']!r}")


def _checked_index(index: pd.DataFrame, index_path: Path, n_classes: int) -> pd.DataFrame:
    """`index` with integer id/label columns; `InputError` naming index.csv and the first bad row otherwise.

    Every command indexes images.npy and the label arrays by these values, so a bad one would surface later as an
    IndexError or a scikit-learn error far from the file that caused it.
    """
    index = index.copy()
    for col in ("id", "label"):
        values = pd.to_numeric(index[col], errors="coerce")
        ok = values.notna() & (values == values.round())
        if not ok.all():
            row = int(np.flatnonzero(~ok.to_numpy())[0])
            raise InputError(index_path, f"{col} {index[col].iloc[row]!r} on line {row + 2} is not an integer")
        index[col] = values.astype(np.int64)
    bad = np.flatnonzero(index["id"].to_numpy() != np.arange(len(index)))
    if bad.size:
        row = int(bad[0])
        raise InputError(index_path, f"id {index['id'].iloc[row]} on line {row + 2} is not its row position "
                                     f"(ids must be 0..{len(index) - 1} in order, one per image in images.npy)")
    labels = index["label"].to_numpy()
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        row = int(bad[0])
        raise InputError(index_path, f"label {labels[row]} on line {row + 2} is not a class index "
                                     f"(meta.json has {n_classes} classes: 0..{n_classes - 1})")
    return index


def _npy_header(n: int, h: int, w: int) -> bytes:
    """A version-1 .npy header for uint8 (n, h, w, 3), padded to a fixed size (numpy's own writer pads to a
    length that depends on the digits of the shape, which we do not know until the data is complete)."""
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({n:d}, {h:d}, {w:d}, 3), }}"
    body_len = _NPY_HEADER_BYTES - 10
    text = text.ljust(body_len - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text.encode("latin1")


def _channel_moments(images: np.ndarray) -> np.ndarray:
    """[n pixels, sum r, g, b, sum of squares r, g, b] in [0, 1] units. OpenCV's SIMD meanStdDev is ~100x faster
    than float64 numpy here, which matters because extraction must keep up with reading."""
    n = images.shape[0] * images.shape[1] * images.shape[2]
    mean, std = cv2.meanStdDev(images.reshape(-1, images.shape[2], 3))
    mean, std = mean.ravel() / 255.0, std.ravel() / 255.0
    return np.concatenate([[n], mean * n, (std**2 + mean**2) * n])


@dataclass
class DatasetWriter:
    """Write a dataset atomically (use as a context manager).

    Images are streamed into a temp ``images.npy`` (no full copy in memory); per-channel sums over the train split
    (or over everything when no row is marked train) give the normalisation stored in meta.json.
    """

    out: Path
    tile_px: int
    classes: list[str]
    mpp: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    _tmp: Path | None = field(default=None, init=False, repr=False)
    _fh: Any = field(default=None, init=False, repr=False)
    _rows: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _sums: dict[bool, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    skipped: dict[str, int] = field(default_factory=dict, init=False)
    meta: dict[str, Any] = field(default_factory=dict, init=False)  # filled when the dataset is complete
    _skipped_items: list[tuple[str, str]] = field(default_factory=list, init=False, repr=False)
    _images_sha: Any = field(default_factory=hashlib.sha256, init=False, repr=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self._sums = {True: np.zeros(7), False: np.zeros(7)}  # [n_px, sum rgb, sum sq rgb] for train / other

    def __enter__(self) -> DatasetWriter:
        out = self.out
        if out.exists() and not self.overwrite:
            raise InputError(out, "output already exists (choose a new name or pass --overwrite)")
        if out.exists() and not (out / "meta.json").is_file():
            raise InputError(out, "output exists and is not a histoeq dataset; refusing to replace it")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            # os.mkdir rather than mkdtemp: mkdtemp makes 0700 folders, a dataset is shared like any output (umask).
            self._tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            os.mkdir(self._tmp)
            self._fh = open(self._tmp / "images.npy", "wb")
            self._fh.write(b"\0" * _NPY_HEADER_BYTES)
        except OSError as exc:
            self._cleanup()
            raise InputError(out, f"cannot write output ({exc.strerror or exc})") from None
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._cleanup()
            return
        try:
            self._finish()
        except BaseException:
            self._cleanup()
            raise

    def skip(self, reason: str, count: int = 1, item: str | None = None) -> None:
        """Count a patch that was not written, with why (meta.json); a named `item` is also listed in
        skipped.csv so the skips can be audited."""
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        if item is not None:
            self._skipped_items.append((item, reason))

    def add(self, images: np.ndarray, rows: list[dict[str, Any]]) -> None:
        """Append a batch: `images` uint8 (n, tile_px, tile_px, 3) and one index row (dict) per image."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.ndim == 3:
            images = images[None]
        if images.shape[1:] != (self.tile_px, self.tile_px, 3) or len(rows) != images.shape[0]:
            raise HistoeqError(f"internal: batch shape {images.shape} / {len(rows)} rows does not fit "
                               f"{self.tile_px} px tiles")
        try:
            data = images.tobytes()
            self._fh.write(data)
            self._images_sha.update(data)
        except OSError as exc:
            raise InputError(self.out, f"cannot write output ({exc.strerror or exc})") from None
        is_train = np.array([r.get("split", "") == "train" for r in rows])
        for flag in (True, False):
            sel = images if is_train.all() == flag and is_train.any() == flag else images[is_train == flag]
            if sel.size:
                self._sums[flag] += _channel_moments(sel)
        start = len(self._rows)
        for i, r in enumerate(rows):
            row = {"id": start + i, "label": int(r["label"]), "patient": str(r.get("patient", "")),
                   "slide": str(r.get("slide", "")), "x": int(r.get("x", -1)), "y": int(r.get("y", -1)),
                   "mpp": r.get("mpp", self.mpp), "split": str(r.get("split", "") or ""),
                   "source": str(r.get("source", ""))}
            for k, v in r.items():  # extra columns are kept
                row.setdefault(k, v)
            self._rows.append(row)

    def __len__(self) -> int:
        return len(self._rows)

    def _finish(self) -> None:
        n = len(self._rows)
        if n == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.skipped.items())
            raise InputError(self.out, "no patches to write" + (f" (skipped {reasons})" if reasons else ""))
        self._fh.seek(0)
        self._fh.write(_npy_header(n, self.tile_px, self.tile_px))
        self._fh.close()
        self._fh = None
        index = pd.DataFrame(self._rows)
        index["mpp"] = pd.to_numeric(index["mpp"], errors="coerce")
        index.to_csv(self._tmp / "index.csv", index=False)
        if self._skipped_items:
            pd.DataFrame(self._skipped_items, columns=["source", "reason"]).to_csv(self._tmp / "skipped.csv",
                                                                                 index=False)
        sums = self._sums[True] if self._sums[True][0] > 0 else self._sums[True] + self._sums[False]
        mean = sums[1:4] / sums[0]
        # A channel that never varies (a constant-colour set) keeps a floor of one grey level, so it stays usable.
        std = np.maximum(np.sqrt(np.maximum(sums[4:7] / sums[0] - mean**2, 0.0)), 1 / 255)
        splits = {s: int((index["split"] == s).sum()) for s in SPLITS}
        splits["none"] = int((index["split"] == "").sum())
        meta = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "tile_px": self.tile_px, "mpp": self.mpp,
            "classes": list(self.classes), "n": n, "provenance": self.provenance,
            "splits": {k: v for k, v in splits.items() if v},
            "class_counts": {c: int((index["label"] == i).sum()) for i, c in enumerate(self.classes)},
            "normalisation": {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
                              "computed_on": "train" if self._sums[True][0] > 0 else "all"},
            "skipped": dict(self.skipped),
        }
        meta["content_sha256"] = _content_hash(self._images_sha.hexdigest(), self._tmp / "index.csv", meta)
        (self._tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            if self.out.exists():  # overwrite=True, checked in __enter__ to be a dataset
                old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
                self.out.rename(old)
                self._tmp.rename(self.out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                self._tmp.rename(self.out)
        except OSError as exc:
            raise InputError(self.out, f"cannot write output ({exc.strerror or exc})") from None
        self._tmp = None
        self.meta = meta

    def _cleanup(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def content_hash(path: str | Path) -> str:
    """sha256 identifying a dataset by what it holds: pixels, index rows (less where each patch was read from) and
    metadata (less provenance). Two imports of the same data through different paths share it, and it does not
    change when the folder moves. Datasets written before it was recorded in meta.json are hashed from disk."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    if "content_sha256" in meta:
        return str(meta["content_sha256"])
    images = hashlib.sha256()
    with open(path / "images.npy", "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)  # leaves fh at the first pixel
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            images.update(chunk)
    return _content_hash(images.hexdigest(), path / "index.csv", meta)


def _content_hash(images_sha256: str, index_csv: Path, meta: dict[str, Any]) -> str:
    index = pd.read_csv(index_csv, keep_default_na=False, dtype=str).drop(columns=["source"], errors="ignore")
    described = {k: v for k, v in meta.items() if k not in ("provenance", "content_sha256")}
    digest = hashlib.sha256(images_sha256.encode())
    digest.update(index.to_csv(index=False).encode())
    digest.update(json.dumps(described, sort_keys=True).encode())
    return digest.hexdigest()
