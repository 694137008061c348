"""Fast batches from an in-memory uint8 patch array: gather, augment on the whole batch, normalise.

Why not a `DataLoader` over PIL images: IDC train is 20k x 50 x 50 x 3 uint8 = 150 MB, so the whole selection is
copied into one tensor once (on CUDA: onto the GPU once) and a batch is a single index operation. Dihedral (D4)
augmentation (presets ``rot90`` and ``flip``) is exact and done with `torch.rot90` / `torch.flip` on the batch,
grouped by transform; only presets that need interpolation or colour work (``rotate``, ``stain``) go through the
data engineer's albumentations transform, per patch, on the CPU.

Randomness is drawn per *sample and epoch* from generators seeded with (seed, epoch), not per batch position: the
same patch gets the same transform in epoch e whatever the batch size or the number of DDP processes, which is what
lets a 2-process run match a 1-process run and `--resume` continue exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from histoeq.errors import HistoeqError

KNOWN_PRESETS = ("none", "flip", "rot90", "rotate", "stain")
BATCH_PRESETS = ("flip", "rot90")  # exact, done on the batch with torch
# D4 element `code` = flip (code // 4) first, then rotate by 90 degrees (code % 4) times, counter-clockwise.
FLIP_CODES = (0, 2, 4, 6)  # identity, 180 degrees, horizontal flip, vertical flip (= h-flip then 180)


@dataclass(frozen=True)
class AugmentPlan:
    """A parsed ``--augment`` preset: which batch-level D4 parts and which per-patch (albumentations) parts."""

    preset: str
    rot90: bool
    flip: bool
    pixel_parts: tuple[str, ...]

    @property
    def d4_codes(self) -> tuple[int, ...]:
        if self.rot90 and self.flip:
            return tuple(range(8))
        if self.rot90:
            return (0, 1, 2, 3)
        if self.flip:
            return FLIP_CODES
        return (0,)


def parse_augment(preset: str) -> AugmentPlan:
    """``"rot90+stain"`` -> AugmentPlan; unknown parts raise `HistoeqError` naming the choices."""
    parts = [p.strip() for p in (preset or "none").split("+") if p.strip()]
    unknown = [p for p in parts if p not in KNOWN_PRESETS]
    if unknown or not parts:
        raise HistoeqError(f"unknown augmentation {'+'.join(unknown) or preset!r} (choose from "
                           f"{', '.join(KNOWN_PRESETS)}, combined with '+')")
    pixel = tuple(p for p in parts if p not in BATCH_PRESETS and p != "none")
    return AugmentPlan(preset="+".join(parts), rot90="rot90" in parts, flip="flip" in parts, pixel_parts=pixel)


def apply_d4(images: torch.Tensor, codes: torch.Tensor, dims: tuple[int, int] = (1, 2)) -> torch.Tensor:
    """Apply D4 element ``codes[i]`` to ``images[i]`` exactly (no interpolation); `dims` are the (H, W) axes."""
    out = images.clone()
    for code in torch.unique(codes).tolist():
        if code == 0:
            continue
        sel = codes == code
        x = images[sel]
        if code >= 4:
            x = x.flip(dims[1])
        out[sel] = torch.rot90(x, code % 4, dims)
    return out


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for (seed, epoch, stream): identical on every process and after a resume."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7919 + stream) % (2**63))


def normalise(batch_uint8_nhwc: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) with the dataset's per-channel mean/std ([0, 1] units)."""
    x = batch_uint8_nhwc.permute(0, 3, 1, 2).float().div_(255.0)
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


class PatchBatches:
    """One selection of patches held as a uint8 tensor (on `device`), served as normalised, augmented batches."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, normalisation: dict[str, list[float]],
                 device: torch.device, plan: AugmentPlan | None = None, seed: int = 0, num_workers: int = 0,
                 pixel_transform_factory: Callable[[str, int], Callable[[np.ndarray], np.ndarray]] | None = None):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
        self.mean = torch.tensor(normalisation["mean"], dtype=torch.float32, device=device)
        self.std = torch.tensor(normalisation["std"], dtype=torch.float32, device=device)
        self.device = device
        self.plan = plan or parse_augment("none")
        self.seed = seed
        self.num_workers = num_workers
        self._factory = pixel_transform_factory
        self._codes: torch.Tensor | None = None
        self._pixel_fn: Callable[[np.ndarray], np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def start_epoch(self, epoch: int) -> None:
        """Draw this epoch's per-sample D4 transform and re-seed the per-patch transform."""
        choices = torch.tensor(self.plan.d4_codes)
        pick = torch.randint(len(choices), (len(self),), generator=epoch_generator(self.seed, epoch, 1))
        self._codes = choices[pick].to(self.device)
        self._pixel_fn = None
        if self.plan.pixel_parts:
            factory = self._factory or _default_pixel_factory
            self._pixel_fn = factory("+".join(self.plan.pixel_parts), int(epoch_generator(self.seed, epoch, 2)
                                                                           .initial_seed() % (2**31)))

    def batch(self, positions: torch.Tensor, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float batch (B,3,H,W) and labels for `positions` (indices into this selection)."""
        positions = positions.to(self.device)
        x = self.images[positions]
        if augment and self._pixel_fn is not None:
            x = self._apply_pixel(x)
        if augment and self._codes is not None and len(self.plan.d4_codes) > 1:
            x = apply_d4(x, self._codes[positions])
        return normalise(x, self.mean, self.std), self.labels[positions]

    def _apply_pixel(self, x: torch.Tensor) -> torch.Tensor:
        arrays = list(x.cpu().numpy())
        fn = self._pixel_fn
        assert fn is not None
        if self.num_workers > 0:
            with ThreadPoolExecutor(self.num_workers) as pool:
                out = list(pool.map(fn, arrays))
        else:
            out = [fn(a) for a in arrays]
        return torch.from_numpy(np.stack(out).astype(np.uint8, copy=False)).to(x.device)


def _default_pixel_factory(preset: str, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    from histoeq.data.transforms import build_transform

    return build_transform(preset, seed=seed)
