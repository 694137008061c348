"""Per-slide stain normalisation: measure a slide's colour once, map all its tiles to one reference.

Why per slide and not per patch: a 50 px patch at 2.5x holds a few dozen nuclei, so its own colour statistics are
mostly its content (a tumour nest is darker than stroma); normalising each patch to a reference would erase the
signal the classifier needs. The colour of a *slide* (its staining batch, scanner and section thickness) is what
differs between patients, so the statistics are measured once over the tissue of a slide (for a patch dataset: all
patches of one patient) and the same map is applied to every tile of it. The same code serves training data (per
patient, `normalise_dataset`), evaluation (per patient) and inference (per slide, from a sample of its tissue
tiles), so a model sees the same transformation everywhere; the method and its reference travel in checkpoints
and ONNX metadata as ``{"method": name, "per": "slide", "reference": {...}}``.

Methods (`METHODS`), written here with numpy and OpenCV because the maths is a few lines and libraries that ship
them (torchstain, staintools, TIAToolbox) normalise one image at a time, not one slide's tiles with one map:

* ``reinhard-lab`` (Reinhard et al. 2001): match the mean and standard deviation of L*, a*, b* over tissue pixels.
  Its statistics also move with the slide's *content*: a slide that is mostly tumour is darker on average.
* ``macenko`` (Macenko et al. 2009): estimate the haematoxylin and eosin optical-density vectors of the slide
  (the 1st/99th percentile angles in the plane of the two main OD directions), unmix each pixel into the two stain
  concentrations, scale each concentration so its 99th percentile matches the reference, remix with the reference
  vectors.
* ``macenko-vectors``: the same without the concentration scaling; only the stains' hues are replaced, each
  pixel's amount of stain is kept (robust to tumour burden, blind to staining intensity).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from histoeq.data.dataset import DatasetWriter, PatchDataset
from histoeq.errors import HistoeqError, InputError
from histoeq.progress import ProgressFn, null_progress

# Optical density above which a pixel counts as tissue (Macenko et al. 2009 use 0.15); below it is glass or fat.
TISSUE_OD = 0.15
MIN_TISSUE_PIXELS = 1000
_MACENKO_SAMPLE = 400_000  # tissue pixels kept per slide for the eigen-decomposition and percentiles


def optical_density(images: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 optical density -log((I + 1) / 256), 0 for white."""
    return -np.log((images.astype(np.float32) + 1.0) / 256.0)


def tissue_pixels(images: np.ndarray) -> np.ndarray:
    """Boolean mask (...) of pixels whose optical density in some channel exceeds `TISSUE_OD`."""
    return optical_density(images).max(axis=-1) > TISSUE_OD


def _numbers(value: Any, shape: tuple[int, ...], name: str, positive: bool = False) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape or not np.isfinite(array).all() or (positive and (array <= 0).any()):
        raise HistoeqError(f"stain statistics need {name} as {'x'.join(map(str, shape))} "
                           f"{'positive ' if positive else ''}numbers, got {value!r:.80}")
    return array


class Reinhard:
    """Mean and standard deviation of L*, a*, b* over tissue pixels (statistics: {"mean", "std", "pixels"})."""

    name = "reinhard-lab"

    @staticmethod
    def _lab(images: np.ndarray) -> np.ndarray:
        flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1, 1, 3).astype(np.float32) / 255.0
        return cv2.cvtColor(flat, cv2.COLOR_RGB2LAB).reshape(images.shape)

    def measure(self, batches: Iterable[np.ndarray]) -> dict[str, Any] | None:
        n, s, ss = 0, np.zeros(3), np.zeros(3)
        for batch in batches:
            mask = tissue_pixels(batch)
            if mask.any():
                lab = self._lab(batch)[mask].astype(np.float64)
                n, s, ss = n + len(lab), s + lab.sum(axis=0), ss + (lab**2).sum(axis=0)
        if n < MIN_TISSUE_PIXELS:
            return None
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean**2, 1e-6))
        return {"mean": _round(mean), "std": _round(std), "pixels": int(n)}

    def reference(self, slides: list[dict[str, Any]]) -> dict[str, Any]:
        return {"mean": _round(np.mean([s["mean"] for s in slides], axis=0)),
                "std": _round(np.mean([s["std"] for s in slides], axis=0)),
                "pixels": int(sum(s.get("pixels", 0) for s in slides))}

    def check(self, stats: dict[str, Any]) -> None:
        _numbers(stats.get("mean"), (3,), "mean")
        _numbers(stats.get("std"), (3,), "std", positive=True)

    def apply(self, images: np.ndarray, source: dict[str, Any], reference: dict[str, Any]) -> np.ndarray:
        lab = self._lab(images)
        scale = np.asarray(reference["std"], np.float32) / np.asarray(source["std"], np.float32)
        lab = (lab - np.asarray(source["mean"], np.float32)) * scale + np.asarray(reference["mean"], np.float32)
        lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
        rgb = cv2.cvtColor(np.ascontiguousarray(lab.reshape(-1, 1, 3)), cv2.COLOR_LAB2RGB).reshape(images.shape)
        return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


class Macenko:
    """H&E optical-density vectors and 99th-percentile concentrations (statistics: {"stain_matrix": 2 x 3 rows
    H then E, unit length, "max_concentration": [H, E], "pixels"}); `scale` False keeps each pixel's concentrations."""

    def __init__(self, name: str, scale: bool, alpha: float = 1.0) -> None:
        self.name, self.scale, self.alpha = name, scale, alpha

    def measure(self, batches: Iterable[np.ndarray]) -> dict[str, Any] | None:
        samples = []
        for batch in batches:
            od = optical_density(batch).reshape(-1, 3)
            od = od[(od > TISSUE_OD).all(axis=1)]  # stained in every channel: excludes glass, fat and red cells
            step = max(1, len(od) // 20_000)  # a bounded, evenly spread share of every batch
            samples.append(od[::step])
        od = np.concatenate(samples) if samples else np.zeros((0, 3), np.float32)
        if len(od) < MIN_TISSUE_PIXELS:
            return None
        od = od[:: max(1, len(od) // _MACENKO_SAMPLE)].astype(np.float64)
        _, vectors = np.linalg.eigh(np.cov(od.T))
        plane = vectors[:, [2, 1]]  # the two largest principal directions
        plane *= np.where(plane[0] < 0, -1.0, 1.0)  # point them into positive OD
        projected = od @ plane
        angle = np.arctan2(projected[:, 1], projected[:, 0])
        lo, hi = np.percentile(angle, [self.alpha, 100 - self.alpha])
        v1, v2 = (plane @ np.array([np.cos(a), np.sin(a)]) for a in (lo, hi))
        # Haematoxylin absorbs red most: the vector with the larger red OD is H.
        stains = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1])
        stains /= np.linalg.norm(stains, axis=1, keepdims=True)
        if np.abs(np.linalg.det(stains @ stains.T)) < 1e-6:
            return None  # a single stain: nothing to unmix
        concentrations = np.linalg.lstsq(stains.T, od.T, rcond=None)[0]
        max_c = np.percentile(concentrations, 99, axis=1)
        if (max_c <= 0).any():
            return None
        return {"stain_matrix": [_round(v) for v in stains], "max_concentration": _round(max_c), "pixels": int(len(od))}

    def reference(self, slides: list[dict[str, Any]]) -> dict[str, Any]:
        stains = np.mean([s["stain_matrix"] for s in slides], axis=0)
        stains /= np.linalg.norm(stains, axis=1, keepdims=True)
        return {"stain_matrix": [_round(v) for v in stains],
                "max_concentration": _round(np.mean([s["max_concentration"] for s in slides], axis=0)),
                "pixels": int(sum(s.get("pixels", 0) for s in slides))}

    def check(self, stats: dict[str, Any]) -> None:
        stains = _numbers(stats.get("stain_matrix"), (2, 3), "stain_matrix")
        _numbers(stats.get("max_concentration"), (2,), "max_concentration", positive=True)
        if np.abs(np.linalg.det(stains @ stains.T)) < 1e-6:
            raise HistoeqError("stain statistics have two parallel stain vectors")

    def apply(self, images: np.ndarray, source: dict[str, Any], reference: dict[str, Any]) -> np.ndarray:
        od = optical_density(images).reshape(-1, 3)
        unmix = np.linalg.pinv(np.asarray(source["stain_matrix"], np.float32).T)  # (2, 3)
        concentrations = od @ unmix.T
        if self.scale:
            concentrations *= (np.asarray(reference["max_concentration"], np.float32)
                               / np.asarray(source["max_concentration"], np.float32))
        od = concentrations @ np.asarray(reference["stain_matrix"], np.float32)
        rgb = 256.0 * np.exp(-od) - 1.0
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).reshape(images.shape)


METHODS = {m.name: m for m in (Reinhard(), Macenko("macenko", scale=True), Macenko("macenko-vectors", scale=False))}


def _round(values: Any) -> list[float]:
    return [round(float(v), 6) for v in np.asarray(values).ravel()]


def get_method(name: Any) -> Reinhard | Macenko:
    if name not in METHODS:
        raise HistoeqError(f"unknown stain normalisation {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[name]


def check_stain(stain: Any) -> dict[str, Any]:
    """A model's or dataset's stain record: a known method and a usable reference, else `HistoeqError`."""
    if not isinstance(stain, dict):
        raise HistoeqError(f"stain normalisation must be a mapping, got {stain!r:.60}")
    get_method(stain.get("method")).check(stain.get("reference") or {})
    return stain


def dataset_stain(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What a model trained on a dataset must do to a slide's colours before its tiles (None: nothing): the
    method and reference statistics recorded by `normalise_dataset`. Carried by checkpoints and ONNX files."""
    stain = (meta.get("provenance") or {}).get("stain")
    if not isinstance(stain, dict):
        return None
    return {"method": stain.get("method"), "per": "slide", "reference": stain.get("reference")}


class StainTransform:
    """The per-slide map a stain-normalised model needs: measured once from the slide's tiles, then applied to
    every batch of them. With `source` None (too little tissue to measure), tiles pass unchanged."""

    def __init__(self, stain: dict[str, Any], source: dict[str, Any] | None) -> None:
        self.method = get_method(stain["method"])
        self.source, self.reference = source, stain["reference"]

    @classmethod
    def measure(cls, stain: dict[str, Any], batches: Iterable[np.ndarray]) -> StainTransform:
        return cls(stain, get_method(stain["method"]).measure(batches))

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return tiles if self.source is None else self.method.apply(tiles, self.source, self.reference)

    def record(self) -> dict[str, Any]:
        """What the transform did, for a prediction's metadata."""
        return {"method": self.method.name, "applied": self.source is not None, "slide": self.source,
                "reference": self.reference}


def sample_evenly(count: int, limit: int) -> np.ndarray:
    """At most `limit` indices spread evenly over range(count): a deterministic sample of a slide's tiles that
    covers all of it, for statistics that need not read every tile."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def normalise_groups(images: np.ndarray, groups: np.ndarray, stain: dict[str, Any],
                     companions: tuple[np.ndarray, ...] = ()) -> list[str]:
    """In place: normalise the uint8 `images` of each group (patient / slide) to `stain`'s reference, with that
    group's statistics measured on its `images`; each array in `companions` (same first axis, e.g. the context
    squares of rotation evaluation) gets the same map. Returns the groups left unchanged (too little tissue)."""
    unchanged = []
    for group in dict.fromkeys(groups.tolist()):
        sel = np.flatnonzero(groups == group)
        transform = StainTransform.measure(stain, [images[sel]])
        if transform.source is None:
            unchanged.append(str(group))
        for array in (images, *companions):
            array[sel] = transform(array[sel])
    return unchanged


def _chunks(images: np.ndarray, ids: np.ndarray, size: int = 4096) -> Iterable[np.ndarray]:
    for start in range(0, len(ids), size):
        yield np.asarray(images[np.sort(ids[start:start + size])])


def normalise_dataset(data: str | Path, out: str | Path, *, method: str = "reinhard-lab", overwrite: bool = False,
                      progress: ProgressFn = null_progress) -> dict[str, Any]:
    """Write a copy of dataset `data` with every patient's patches normalised by `method` to a reference made
    from the training patients. A patient with too little tissue to measure is copied unchanged (and listed)."""
    normaliser = get_method(method)
    ds = PatchDataset.open(data)
    index = ds.index
    patient_of_row = index["patient"].astype(str).to_numpy()
    patients = list(dict.fromkeys(patient_of_row))
    per_patient: dict[str, dict[str, Any] | None] = {}
    for i, patient in enumerate(patients):
        per_patient[patient] = normaliser.measure(_chunks(ds.images, np.flatnonzero(patient_of_row == patient)))
        progress("stain statistics", i + 1, len(patients), patient)
    train = set(patient_of_row[index["split"].eq("train").to_numpy()]) or set(patients)
    measured = [s for p, s in per_patient.items() if p in train and s is not None]
    if not measured:
        raise InputError(data, "no training patient has enough tissue to make a stain reference")
    stain = {"method": normaliser.name, "reference": normaliser.reference(measured)}
    provenance = {**ds.meta.get("provenance", {}), "stain": {
        **stain, "per": "patient", "source": str(data),
        "reference_from": "train" if index["split"].eq("train").any() else "all",
        "unchanged": sorted(p for p, s in per_patient.items() if s is None)}}
    with DatasetWriter(Path(out), tile_px=ds.tile_px, classes=ds.classes, mpp=ds.mpp, provenance=provenance,
                       overwrite=overwrite) as writer:
        for start in range(0, len(ds), 4096):
            rows = index.iloc[start:start + 4096]
            images = np.array(ds.images[start:start + len(rows)])
            for patient in dict.fromkeys(patient_of_row[start:start + len(rows)]):
                sel = patient_of_row[start:start + len(rows)] == patient
                images[sel] = StainTransform(stain, per_patient[patient])(images[sel])
            writer.add(images, rows.drop(columns=["id"]).to_dict("records"))
            progress("normalise", start + len(rows), len(ds), "")
    return {"out": str(out), "n": len(writer), "patients": len(patients), "method": normaliser.name,
            "reference": stain["reference"], "unchanged": provenance["stain"]["unchanged"]}
