"""Cost of the group convolutions against plain PyTorch CNNs, measured in one interleaved run.

For each G-CNN (p4m, se2) three references: the G-CNN itself, a plain ``nn.Conv2d`` CNN of the same expanded width
(channels = fields·|G|, the same FLOPs: the ideal), and the ``cnn`` baseline matched in parameters. Timings are
interleaved round-robin and the median is reported, so machine load affects every model alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from histoeq.errors import HistoeqError
from histoeq.lab.checks import check_int
from histoeq.models import create
from histoeq.models.histonet import HistoNet
from histoeq.nn.pool import EquivariantPool2d
from histoeq.progress import ProgressFn, null_progress
from histoeq.runs.device import resolve_device

MIN_TILE_PX = 4  # the smallest tile a checkpoint or export accepts


def plain_cnn(widths: tuple[int, ...], kernel_sizes: tuple[int, int] = (5, 3), num_classes: int = 2,
              pool: str = "blur") -> nn.Sequential:
    """The HistoNet layout in stock PyTorch modules only (the 'same expanded width' reference)."""
    layers: list[nn.Module] = []
    channels = 3
    for stage, width in enumerate(widths):
        k_first = kernel_sizes[0] if stage == 0 else kernel_sizes[1]
        k = kernel_sizes[1]
        layers += [nn.Conv2d(channels, width, k_first, padding=k_first // 2, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True), nn.Conv2d(width, width, k, padding=k // 2, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True), EquivariantPool2d(pool)]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


@dataclass
class LayerBenchRow:
    model: str
    reference: str
    params: int
    train_ms: float
    eval_ms: float
    train_ratio: float | None = None
    eval_ratio: float | None = None


def _timer(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if x.is_cuda:  # CUDA kernels run asynchronously: without this the next step's timer absorbs this one
            torch.cuda.synchronize()

    return step


def _eval_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.eval()
        with torch.no_grad():
            model(x)
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def bench_layers(models: tuple[str, ...] = ("p4m", "se2"), batch: int = 32, tile_px: int = 50, repeats: int = 10,
                 warmup: int = 2, device: str = "cpu", progress: ProgressFn = null_progress) -> list[LayerBenchRow]:
    """Median train-step and eval-forward times; ratios are G-CNN / plain CNN of equal expanded width."""
    check_int("--batch-size", batch)
    check_int("--tile-px", tile_px, MIN_TILE_PX)
    check_int("--repeats", repeats)
    check_int("warmup", warmup, 0)
    if batch == 1 and tile_px < 5:
        # the last stage sees a 1x1 map: a training-mode BatchNorm over one value per channel is undefined
        raise HistoeqError(f"--batch-size 1 needs --tile-px of at least 5, got {tile_px} (a training step's "
                           "BatchNorm needs more than one value per channel)")
    dev = resolve_device(device)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, tile_px, tile_px, device=dev)
    y = torch.randint(0, 2, (batch,), device=dev)
    contenders: dict[str, nn.Module] = {"cnn (matched params)": create("cnn")}
    pairs: list[tuple[str, str]] = []
    for name in models:
        gcnn: HistoNet = create(name)
        expanded = tuple(w * gcnn.group.order for w in gcnn.widths)
        contenders[name] = gcnn
        ref = f"plain CNN {'/'.join(map(str, expanded))}"
        contenders[ref] = plain_cnn(expanded)
        # Unfused, so it runs exactly the reference's operators.
        contenders[f"{name}.to_plain()"] = gcnn.to_plain(tile_px, fuse_bn=False)
        pairs.append((name, ref))
    contenders = {k: m.to(dev) for k, m in contenders.items()}
    steps: dict[str, tuple[Callable[[], None] | None, Callable[[], None]]] = {}
    for key, model in contenders.items():
        is_plain_export = key.endswith(".to_plain()")
        train = None if is_plain_export else _train_step(model, torch.optim.AdamW(model.parameters(), 1e-3), x, y)
        steps[key] = (train, _eval_step(model, x))

    times: dict[str, dict[str, list[float]]] = {k: {"train": [], "eval": []} for k in steps}
    total = 2 * (warmup + repeats)
    # Training phase first, then the eval phase, so eval sees fixed weights (the cached filter bank, as in
    # deployment); within a phase the models take turns so load drifts hit all of them alike.
    for phase, index in (("train", 0), ("eval", 1)):
        for rep in range(warmup + repeats):
            for key, fns in steps.items():
                fn = fns[index]
                elapsed = _timer(fn) if fn is not None else float("nan")
                if rep >= warmup:
                    times[key][phase].append(elapsed)
            progress("bench layers", rep + 1 + (warmup + repeats) * index, total)

    med = {k: {m: statistics.median(v) if v else float("nan") for m, v in d.items()} for k, d in times.items()}
    rows = []
    for key, model in contenders.items():
        params = sum(p.numel() for p in model.parameters())
        rows.append(LayerBenchRow(key, "", params, med[key]["train"], med[key]["eval"]))
    by_name = {r.model: r for r in rows}
    for name, ref in pairs:
        for key in (name, f"{name}.to_plain()"):
            row = by_name[key]
            row.reference = ref
            row.train_ratio = row.train_ms / med[ref]["train"] if key == name else None
            row.eval_ratio = row.eval_ms / med[ref]["eval"]
    return rows
