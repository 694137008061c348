"""The registered models: ``cnn`` (baseline), ``p4`` (C4), ``p4m`` (D4) and ``se2`` (C_N or D_N, N=8 by default).

Widths: ``width`` is the baseline CNN's first-stage channel count (stages are width, 2·width, 4·width).
``match="params"`` (default) gives a G-CNN about the CNN's parameter count: channels ≈ C/sqrt(|G|), solved
exactly on the real parameter count (Veeling et al. 2018 matched DenseNet and P4M the same way), so it costs
~|G|× the CNN's FLOPs. ``match="width"`` keeps the expanded width C·|G| equal to the CNN's C (channels C/|G|,
same FLOPs, ~|G|× fewer parameters).
"""

from __future__ import annotations

from functools import lru_cache

from histoeq.errors import HistoeqError
from histoeq.models.histonet import HistoNet
from histoeq.models.registry import register_model
from histoeq.nn.actions import exact_subgroup
from histoeq.nn.groups import Group, cyclic, dihedral, trivial
from histoeq.nn.kernels import DEFAULT_ROTATION_METHOD

DEFAULT_TILE_PX = 50
DEFAULT_MPP = 4.0
DEFAULT_WIDTH = 32


def _stage_widths(width: int) -> tuple[int, int, int]:
    return (width, 2 * width, 4 * width)


def _count(group: Group, width: int, method: str, num_classes: int, in_channels: int) -> int:
    net = HistoNet(group, _stage_widths(width), method=method, num_classes=num_classes, in_channels=in_channels)
    return sum(p.numel() for p in net.parameters())


@lru_cache(maxsize=64)
def _matched_width(group: Group, width: int, method: str, match: str, num_classes: int, in_channels: int) -> int:
    if group.order == 1:
        return width
    if match == "width":
        return max(1, round(width / group.order))
    target = _count(trivial(), width, "pixel", num_classes, in_channels)
    # Parameters grow monotonically with the width: walk from C/sqrt(|G|) to the two widths around the target.
    w = max(1, round(width / group.order**0.5))
    count = _count(group, w, method, num_classes, in_channels)
    step = 1 if count < target else -1
    while w + step >= 1:
        nxt = _count(group, w + step, method, num_classes, in_channels)
        if (nxt >= target) != (count >= target) or abs(nxt - target) >= abs(count - target):
            return w + step if abs(nxt - target) < abs(count - target) else w
        w, count = w + step, nxt
    return w


def _build(name: str, group: Group, method: str, *, num_classes: int, in_channels: int, width: int, match: str,
           extra_config: dict, dropout: float) -> HistoNet:
    if match not in ("params", "width"):
        raise HistoeqError(f"match must be 'params' or 'width', got {match!r}")
    if width < 1 or num_classes < 1:
        raise HistoeqError("width and num_classes must be positive")
    fields = _matched_width(group, width, method, match, num_classes, in_channels)
    net = HistoNet(group, _stage_widths(fields), method=method, num_classes=num_classes,
                   in_channels=in_channels, dropout=dropout)
    net.config = {"name": name, "num_classes": num_classes, "in_channels": in_channels, "width": width,
                  "match": match, "dropout": dropout, **extra_config}
    exact = exact_subgroup(group)
    net.default_cfg = {
        "tile_px": DEFAULT_TILE_PX,
        "mpp": DEFAULT_MPP,
        "group": group.name,
        "group_order": group.order,
        "kernel_method": method,
        # Invariant exactly (to float rounding) under these elements at every tile size.
        "exact_group": "none" if group.order == 1 else exact.name,
        "exact_elements": exact.order,
    }
    return net


@register_model
def cnn(*, num_classes: int = 2, in_channels: int = 3, width: int = DEFAULT_WIDTH, match: str = "params",
        dropout: float = 0.2) -> HistoNet:
    """Plain CNN baseline (trivial group)."""
    return _build("cnn", trivial(), "pixel", num_classes=num_classes, in_channels=in_channels, width=width,
                  match=match, extra_config={}, dropout=dropout)


@register_model
def p4(*, num_classes: int = 2, in_channels: int = 3, width: int = DEFAULT_WIDTH, match: str = "params",
       dropout: float = 0.2) -> HistoNet:
    """G-CNN on p4: the four 90° rotations (C4), exact on the pixel grid."""
    return _build("p4", cyclic(4), "pixel", num_classes=num_classes, in_channels=in_channels, width=width,
                  match=match, extra_config={}, dropout=dropout)


@register_model
def p4m(*, num_classes: int = 2, in_channels: int = 3, width: int = DEFAULT_WIDTH, match: str = "params",
        dropout: float = 0.2) -> HistoNet:
    """G-CNN on p4m: 90° rotations and mirrors (D4), exact on the pixel grid."""
    return _build("p4m", dihedral(4), "pixel", num_classes=num_classes, in_channels=in_channels, width=width,
                  match=match, extra_config={}, dropout=dropout)


@register_model
def se2(*, orientations: int = 8, mirrors: bool = False, kernel_method: str = DEFAULT_ROTATION_METHOD,
        num_classes: int = 2, in_channels: int = 3, width: int = DEFAULT_WIDTH, match: str = "params",
        dropout: float = 0.2) -> HistoNet:
    """SE(2) G-CNN discretised to N orientations (C_N; D_N with ``mirrors``), filters rotated by resampling.

    Exact for the 90° multiples when N is a multiple of 4, approximate in between (see ``histoeq.nn.kernels``)."""
    if orientations < 1:
        raise HistoeqError(f"orientations must be positive, got {orientations}")
    group = dihedral(orientations) if mirrors else cyclic(orientations)
    return _build("se2", group, kernel_method, num_classes=num_classes, in_channels=in_channels, width=width,
                  match=match, dropout=dropout,
                  extra_config={"orientations": orientations, "mirrors": mirrors, "kernel_method": kernel_method})


def _register_se2_variant(name: str, orientations: int, mirrors: bool, summary: str) -> None:
    """A named preset of `se2` (timm style: one name per variant, so the CLI, run records and sweeps name the
    group instead of threading an orientation count through every layer). Its config keeps the preset's values,
    so ``create(**model.config)`` rebuilds it; other values for them are refused."""

    def build(**kwargs: object) -> HistoNet:
        for key, fixed in (("orientations", orientations), ("mirrors", mirrors)):
            if kwargs.pop(key, fixed) != fixed:
                raise HistoeqError(f"model {name!r} has {key}={fixed}; choose another variant (histoeq models)")
        net = se2(orientations=orientations, mirrors=mirrors, **kwargs)  # type: ignore[arg-type]
        net.config["name"] = name
        return net

    build.__name__ = name
    build.__doc__ = summary
    register_model(build)


_register_se2_variant("se2_c4", 4, False, "SE(2) G-CNN with 4 orientations (C4): se2's layers on the 90° rotations.")
_register_se2_variant("se2_c16", 16, False, "SE(2) G-CNN with 16 orientations (C16), filters rotated by resampling.")
_register_se2_variant("se2_d8", 8, True, "SE(2) G-CNN with 8 orientations and mirrors (D8).")
