"""Per-slide (per-patient) Reinhard stain normalisation in CIELAB.

Why per slide and not per patch: a 50 px patch at 2.5x holds a few dozen nuclei, so its own colour statistics are
mostly its content (a tumour nest is darker than stroma); normalising each patch to a reference would erase the
signal the classifier needs. The colour of a *slide* (its staining batch, scanner and section thickness) is what
differs between patients, so the statistics are estimated once over all tissue pixels of a slide (for a patch
dataset: all patches of one patient) and the same affine map is applied to every tile of it. The same function
serves training data (per patient, `normalise_dataset`) and inference (per slide, from its tissue tiles), so a
model sees the same transformation in both.

Reinhard et al., "Color transfer between images", IEEE CG&A 2001: match the mean and standard deviation of each
CIELAB channel to a reference. Chosen over Macenko/Vahadane because it has no per-slide optimisation that can fail
on a slide with little haematoxylin, and because its three means and three standard deviations are easy to store
in a model's metadata. OpenCV does the colour conversions (float32, L in [0, 100]).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from histoeq.errors import HistoeqError
from histoeq.progress import ProgressFn, null_progress

METHOD = "reinhard-lab"
# Optical density above which a pixel counts as tissue (Macenko et al. 2009 use 0.15); below it is glass or fat.
TISSUE_OD = 0.15
MIN_TISSUE_PIXELS = 1000


@dataclass(frozen=True)
class LabStats:
    """Mean and standard deviation of L, a, b over the tissue pixels of one slide (or of a reference)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pixels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"mean": [round(v, 5) for v in self.mean], "std": [round(v, 5) for v in self.std],
                "pixels": int(self.pixels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabStats:
        mean, std = d.get("mean"), d.get("std")
        ok = all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, int | float) for x in v)
                 for v in (mean, std))
        if not ok or min(std) <= 0:  # type: ignore[arg-type]
            raise HistoeqError(f"stain statistics need three means and three positive standard deviations, got {d}")
        return cls(tuple(float(x) for x in mean), tuple(float(x) for x in std),  # type: ignore[arg-type,union-attr]
                   int(d.get("pixels", 0)))


def _to_lab(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 CIELAB with the same shape."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(images.shape)


def tissue_pixels(images: np.ndarray) -> np.ndarray:
    """Boolean mask (..., ) of pixels whose optical density in some channel exceeds `TISSUE_OD`."""
    od = -np.log((images.astype(np.float32) + 1.0) / 256.0)
    return od.max(axis=-1) > TISSUE_OD


class _Moments:
    """Running sums of LAB over tissue pixels, so a slide's statistics can be gathered tile batch by tile batch."""

    def __init__(self) -> None:
        self.n = 0
        self.s = np.zeros(3)
        self.ss = np.zeros(3)

    def add(self, images: np.ndarray) -> None:
        mask = tissue_pixels(images)
        if not mask.any():
            return
        lab = _to_lab(images)[mask].astype(np.float64)
        self.n += len(lab)
        self.s += lab.sum(axis=0)
        self.ss += (lab**2).sum(axis=0)

    def stats(self) -> LabStats | None:
        if self.n < MIN_TISSUE_PIXELS:
            return None
        mean = self.s / self.n
        std = np.sqrt(np.maximum(self.ss / self.n - mean**2, 1e-6))
        return LabStats(tuple(mean.tolist()), tuple(std.tolist()), self.n)  # type: ignore[arg-type]


def lab_stats(batches: Iterable[np.ndarray]) -> LabStats | None:
    """LAB statistics over the tissue pixels of uint8 RGB batches (N, H, W, 3); None with too little tissue."""
    moments = _Moments()
    for batch in batches:
        moments.add(np.asarray(batch))
    return moments.stats()


def reference_stats(per_slide: Iterable[LabStats]) -> LabStats:
    """The reference a model is normalised to: the mean over training slides of their means and standard
    deviations (each slide counts once, however large it is)."""
    stats = list(per_slide)
    if not stats:
        raise HistoeqError("no slide with enough tissue to compute a stain reference")
    mean = np.mean([s.mean for s in stats], axis=0)
    std = np.mean([s.std for s in stats], axis=0)
    return LabStats(tuple(mean.tolist()), tuple(std.tolist()), sum(s.pixels for s in stats))  # type: ignore[arg-type]


def reinhard(images: np.ndarray, source: LabStats, target: LabStats) -> np.ndarray:
    """Map uint8 RGB images from `source` statistics to `target` ones (every pixel, one affine map per channel)."""
    lab = _to_lab(images)
    scale = np.asarray(target.std, np.float32) / np.asarray(source.std, np.float32)
    lab = (lab - np.asarray(source.mean, np.float32)) * scale + np.asarray(target.mean, np.float32)
    lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
    rgb = cv2.cvtColor(np.ascontiguousarray(lab.reshape(-1, 1, 3)), cv2.COLOR_LAB2RGB).reshape(images.shape)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _chunks(images: np.ndarray, ids: np.ndarray, size: int = 4096) -> Iterable[np.ndarray]:
    for start in range(0, len(ids), size):
        yield np.asarray(images[np.sort(ids[start:start + size])])


def normalise_dataset(data: str | Path, out: str | Path, *, overwrite: bool = False,
                      progress: ProgressFn = null_progress) -> dict[str, Any]:
    """Write a copy of dataset `data` with every patient's patches Reinhard-normalised to the training patients'
    reference. A patient with too little tissue to estimate statistics is copied unchanged (and listed)."""
    from histoeq.data.dataset import DatasetWriter, PatchDataset

    ds = PatchDataset.open(data)
    index = ds.index
    patients = list(dict.fromkeys(index["patient"].astype(str)))
    per_patient: dict[str, LabStats | None] = {}
    for i, patient in enumerate(patients):
        ids = np.flatnonzero(index["patient"].astype(str).to_numpy() == patient)
        per_patient[patient] = lab_stats(_chunks(ds.images, ids))
        progress("stain statistics", i + 1, len(patients), patient)
    train_patients = set(index.loc[index["split"] == "train", "patient"].astype(str)) or set(patients)
    reference = reference_stats(s for p, s in per_patient.items() if p in train_patients and s is not None)
    provenance = {**ds.meta.get("provenance", {}), "stain": {
        "method": METHOD, "per": "patient", "source": str(data), "reference": reference.to_dict(),
        "reference_from": "train" if index["split"].eq("train").any() else "all",
        "unchanged": sorted(p for p, s in per_patient.items() if s is None)}}
    with DatasetWriter(Path(out), tile_px=ds.tile_px, classes=ds.classes, mpp=ds.mpp, provenance=provenance,
                       overwrite=overwrite) as writer:
        for start in range(0, len(ds), 4096):
            rows = index.iloc[start:start + 4096]
            images = np.asarray(ds.images[start:start + len(rows)])
            normalised = images.copy()
            for patient in rows["patient"].astype(str).unique():
                stats = per_patient[patient]
                if stats is not None:
                    sel = (rows["patient"].astype(str) == patient).to_numpy()
                    normalised[sel] = reinhard(images[sel], stats, reference)
            writer.add(normalised, rows.drop(columns=["id"]).to_dict("records"))
            progress("normalise", min(start + len(rows), len(ds)), len(ds), "")
    return {"out": str(out), "n": len(writer), "patients": len(patients), "reference": reference.to_dict(),
            "unchanged": provenance["stain"]["unchanged"]}
