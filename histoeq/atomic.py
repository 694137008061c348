"""Atomic output files: every result is written to a temporary name in the target folder and renamed over the
target, so an interrupted or failed command never leaves a half-written file (a reader sees the old file or the
new one)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    For writers that want a file name (matplotlib's savefig, ``np.save``). ``suffix`` keeps the extension a writer
    may infer the format from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; it is synced and renamed over ``path`` on success."""
    with atomic_path(path) as tmp:
        kwargs: dict[str, Any] = {} if binary else {"newline": "", "encoding": "utf-8"}
        with open(tmp, "wb" if binary else "w", **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_open(path, binary=True) as fh:
        fh.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)
