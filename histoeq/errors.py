"""User-facing errors.

Everything below the CLI raises `HistoeqError` (or a subclass) for bad input: the CLI prints its message as one line
and exits with code 2, without a traceback. Messages name the file and the problem, e.g.
``"slide.svs: not a readable slide (zero-byte file)"``.
"""

from __future__ import annotations

from pathlib import Path


class HistoeqError(Exception):
    """Bad input or an unusable environment, reported to the user as one line (exit code 2)."""

    exit_code = 2


class InputError(HistoeqError):
    """A file given by the user cannot be used."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")
