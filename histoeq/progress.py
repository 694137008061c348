"""Progress reporting without printing.

Long steps (extraction, training, prediction) take a `ProgressFn` and call it as
``progress(task, done, total, message)``; the CLI renders it with rich, library users may pass their own
or nothing. ``total`` is None when unknown. ``message`` carries short live figures (loss, AUC, tiles/s).
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, task: str, done: int, total: int | None = None, message: str = "") -> None: ...


def null_progress(task: str, done: int, total: int | None = None, message: str = "") -> None:
    """The default callback: report nothing."""
