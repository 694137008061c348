"""Training-time augmentation presets, built with albumentations.

The presets are the axes of the equivariance study: a P4M model is exactly invariant to `rot90` (the 8 symmetries
of the square, D4) so augmenting with it should not help it, while a plain CNN needs it; `rotate` (any angle)
probes the off-grid rotations only SE(2) models handle; `stain` is H&E colour variation between labs.
Presets combine with '+', applied left to right: ``rot90+stain``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402  (albumentations' own dependency; only used for its border-mode constants)
import numpy as np  # noqa: E402

from histoeq.errors import HistoeqError  # noqa: E402

Transform = Callable[[np.ndarray], np.ndarray]


def _preset(name: str) -> list[A.BasicTransform]:
    if name == "none":
        return []
    if name == "flip":
        return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if name == "rot90":
        return [A.SquareSymmetry(p=1.0)]  # uniform over all 8 elements of D4
    if name == "rotate":
        # Any angle; reflect padding so corners are tissue-like rather than black.
        return [A.Rotate(limit=(-180, 180), interpolation=cv2.INTER_LINEAR, border_mode=cv2.BORDER_REFLECT_101,
                         p=1.0)]
    if name == "stain":
        # HED-space stain jitter plus a mild colour jitter (brightness/contrast/saturation/hue).
        return [A.HEStain(method="random_preset", intensity_scale_range=(0.9, 1.1),
                          intensity_shift_range=(-0.05, 0.05), p=0.8),
                A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.03, p=0.8)]
    raise HistoeqError(f"unknown augmentation preset {name!r} (choose from: {', '.join(PRESETS)}; combine with '+')")


PRESETS = ("none", "flip", "rot90", "rotate", "stain")


def build_transform(preset: str, seed: int | None = None) -> Transform:
    """A callable uint8 HWC RGB -> uint8 HWC RGB for `preset` ('none', 'flip', 'rot90', 'rotate', 'stain' or
    a '+'-joined combination). `seed` makes the random draws reproducible."""
    names = [p.strip() for p in str(preset).split("+")]
    if not names or any(not n for n in names):
        raise HistoeqError(f"unknown augmentation preset {preset!r}")
    steps: list[A.BasicTransform] = []
    for name in names:
        steps += _preset(name)
    if not steps:
        return _identity
    pipeline = A.Compose(steps, seed=seed)

    def apply(image: np.ndarray) -> np.ndarray:
        return pipeline(image=np.ascontiguousarray(image))["image"]

    apply.preset = preset  # type: ignore[attr-defined]
    return apply


def _identity(image: np.ndarray) -> np.ndarray:
    return image
