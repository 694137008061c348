"""The torch device a command runs on, chosen the same way by training, evaluation and the benchmarks."""

from __future__ import annotations

import torch

from histoeq.errors import HistoeqError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a one-line error."""
    if name not in ("auto", "cpu", "cuda"):
        raise HistoeqError(f"unknown device {name!r} (choose auto, cpu or cuda)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise HistoeqError("--device cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")
