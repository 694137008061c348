"""`histoeq bench train`: wall time of one training epoch per model on the train split.

It times the same code path as `histoeq train` (in-memory batches, AdamW step) but only the training epoch, not
validation or checkpoint writing, so the numbers compare model cost. No run folder is written.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from histoeq.data.dataset import PatchDataset
from histoeq.data.fractions import select_fraction
from histoeq.lab.checks import check_int
from histoeq.progress import ProgressFn, null_progress
from histoeq.runs.device import resolve_device
from histoeq.train.batches import PatchBatches, parse_augment
from histoeq.train.models import available_models, create_model


def bench_train(data: str | Path, models: list[str] | None = None, *, fraction: float = 1.0, batch_size: int = 128,
                width: int | None = None, augment: str = "none", device: str = "auto",
                seed: int = 0, progress: ProgressFn = null_progress) -> list[dict[str, Any]]:
    """One timed epoch per model (after one untimed warm-up step); returns rows with seconds and patches/s."""
    check_int("--batch-size", batch_size)
    if width is not None:
        check_int("--width", width)
    torch_device = resolve_device(device)
    dataset = PatchDataset.open(data)
    dataset.split_ids("train")
    ids = select_fraction(dataset.index, fraction, seed, split="train")
    plan = parse_augment(augment)
    batches = PatchBatches(dataset.images[ids], dataset.labels[ids], dataset.normalisation, torch_device, plan, seed)
    names = models or available_models()
    for name in names:  # fail on a bad name before timing anything
        if name not in available_models():
            create_model(name, num_classes=len(dataset.classes))
    rows = []
    for name in names:
        torch.manual_seed(seed)
        model = create_model(name, num_classes=len(dataset.classes), width=width)
        model = model.to(torch_device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batches.start_epoch(0)
        order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed))
        steps = math.ceil(len(batches) / batch_size)

        def step(positions: torch.Tensor, model: torch.nn.Module = model,
                 optimizer: torch.optim.Optimizer = optimizer) -> None:
            x, y = batches.batch(positions)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step(order[:batch_size])  # warm-up (allocations, kernel selection)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for s in range(steps):
            step(order[s * batch_size:(s + 1) * batch_size])
            if s % 10 == 0:
                progress(f"bench {name}", s + 1, steps)
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        progress(f"bench {name}", steps, steps)
        rows.append({"model": name, "config": getattr(model, "config", {}),
                     "parameters": int(sum(p.numel() for p in model.parameters())), "patches": len(batches),
                     "steps": steps, "seconds": seconds, "patches_per_s": len(batches) / seconds,
                     "device": str(torch_device), "threads": torch.get_num_threads()})
    return rows

