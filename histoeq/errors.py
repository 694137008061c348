"""User-facing errors.

Everything below the CLI raises `HistoeqError` (or a subclass) for bad input: the CLI prints its message as one line
and exits with code 2, without a traceback. Messages name the file and the problem, e.g.
``"slide.svs: not a readable slide (zero-byte file)"``.
"""

from __future__ import annotations

import re
import warnings
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


class InputWarning(UserWarning):
    """Input that is usable but probably not what the user meant (e.g. a --slide-mpp far from the file's own): the
    run goes on, and the CLI prints the message as one ``warning:`` line on stderr."""


def warn_input(path: str | Path | None, problem: str) -> None:
    """Issue an `InputWarning` worded like an `InputError` (``<file>: <problem>``); library callers can filter it."""
    warnings.warn(problem if path is None else f"{path}: {problem}", InputWarning, stacklevel=2)


# Terminal control sequences (CSI such as colours, OSC such as window titles) and other control characters: a file
# name or a library's message carrying them must not restyle or rewrite the user's terminal.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """`text` as one printable line: control sequences removed, whitespace runs (newlines too) made one space."""
    return " ".join(_CONTROL.sub(" ", text).split())


def clip(text: str, limit: int = 160) -> str:
    """The first line of a library's message, printable, cut at a word boundary to at most `limit` characters
    (with an ellipsis when cut), for quoting inside a one-line error."""
    first = next((line for line in _CONTROL.sub(lambda m: "\n" if m.group() == "\n" else " ", text).splitlines()
                  if line.strip()), "")
    first = " ".join(first.split())
    if len(first) <= limit:
        return first
    cut = first[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:") + "…"
