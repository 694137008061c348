"""Slides opened by a command's up-front check, kept open for its work pass.

Commands check every slide before reading any pixel (a bad file late in a list should fail in seconds, not after
hours), then work through the slides in turn. Keeping the checked slides open saves opening each one twice; only the
first `limit` are kept, because file handles (and each backend's caches) are finite, and the rest are opened again
when their turn comes (their headers are then parsed twice: milliseconds, against the minutes their work takes,
while keeping every slide of a long list open would hold a file handle and the decoder caches of each). Every slide
is closed after use, also when the work pass fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from histoeq.slide.reader import Slide

KEEP_OPEN = 16
R = TypeVar("R")


class KeptOpen:
    """`check(path)` opens a slide (kept for later when there is room); `take(path)` hands it over for the work
    pass, opening it again if it was not kept. Use as a context manager: whatever is still kept is closed on exit."""

    def __init__(self, opener: Callable[[Path], Slide], limit: int = KEEP_OPEN) -> None:
        self._open = opener
        self._limit = limit
        self._kept: dict[Path, Slide] = {}

    def check(self, path: Path, inspect: Callable[[Slide], R]) -> R:
        """Open `path` and return `inspect(slide)`; the slide stays open (until `take`) while fewer than `limit`
        are kept, and is closed at once otherwise or when `inspect` raises."""
        slide = self._open(path)
        try:
            result = inspect(slide)
        except BaseException:
            slide.close()
            raise
        if path in self._kept or len(self._kept) >= self._limit:
            slide.close()
        else:
            self._kept[path] = slide
        return result

    def take(self, path: Path) -> Slide:
        """The slide of `path` for the work pass (the caller closes it, e.g. with ``with``)."""
        kept = self._kept.pop(path, None)
        return kept if kept is not None else self._open(path)

    def close(self) -> None:
        for slide in self._kept.values():
            slide.close()
        self._kept.clear()

    def __enter__(self) -> KeptOpen:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
