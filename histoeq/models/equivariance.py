"""Measuring invariance of a model's logits under rotations off the pixel grid: the 45° protocol."""

from __future__ import annotations

import torch
from scipy import ndimage
from torch import nn

from histoeq.nn.actions import rotate_image


def smoothed_noise_disk(n: int, tile_px: int, sigma: float = 2.0, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """(n, C, tile, tile) Gaussian-smoothed (σ px) white noise times the inscribed disk: the protocol's inputs."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, channels, tile_px, tile_px, generator=gen, dtype=torch.float64).numpy()
    smooth = ndimage.gaussian_filter(noise, sigma=(0, 0, sigma, sigma))
    c = (tile_px - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(tile_px) - c, torch.arange(tile_px) - c, indexing="ij")
    disk = ((yy**2 + xx**2) <= (tile_px / 2) ** 2).to(torch.float32)
    x = torch.as_tensor(smooth, dtype=torch.float32)
    return x / x.std() * disk


def spline_rotate(x: torch.Tensor, angle_deg: float, order: int = 5) -> torch.Tensor:
    """Rotate (B, C, H, W) about the centre with a quintic spline (scipy), in the same sense as ``torch.rot90``.

    Unlike bilinear interpolation, which shrinks the standard deviation of the protocol's σ=2 px noise by 2.0% at
    45° (measured), this keeps the signal's amplitude, so it isolates the model's own equivariance error."""
    out = ndimage.rotate(x.double().numpy(), angle_deg, axes=(3, 2), reshape=False, order=order, mode="constant")
    return torch.as_tensor(out, dtype=x.dtype)


@torch.no_grad()
def rotation_error(model: nn.Module, angle_deg: float = 45.0, tile_px: int = 50, n: int = 8, seed: int = 0,
                   interpolation: str = "bilinear") -> float:
    """Mean over n protocol inputs of ||f(x) − f(Rx)|| / ||f(x)|| with R a rotation about the centre.

    ``interpolation="bilinear"`` is the issue's protocol; ``"spline"`` uses :func:`spline_rotate`. The model is
    put in eval mode (random weights are the protocol's subject)."""
    model.eval()
    x = smoothed_noise_disk(n, tile_px, seed=seed)
    rx = rotate_image(x, angle_deg) if interpolation == "bilinear" else spline_rotate(x, angle_deg)
    fx, frx = model(x), model(rx)
    return ((fx - frx).norm(dim=1) / fx.norm(dim=1)).mean().item()

