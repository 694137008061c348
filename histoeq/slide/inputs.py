"""Which slides a command was given: files, folders, glob patterns or a list file.

Why: a cohort is often a folder, a pattern too long for the shell (or quoted on purpose), or a list kept beside a
study; every command that takes slides should read them the same way, and say which argument matched nothing.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from histoeq.errors import InputError
from histoeq.slide.backends import SLIDE_SUFFIXES

LIST_SUFFIXES = (".txt", ".lst", ".list")
MAX_LIST_BYTES = 16 << 20


def _is_slide(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES


def _read_list(path: Path) -> list[Path]:
    """One slide path per line (blank lines and ``#`` comments skipped), relative paths from the list's folder."""
    if path.stat().st_size > MAX_LIST_BYTES:
        raise InputError(path, f"slide list larger than {MAX_LIST_BYTES >> 20} MiB")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(path, "slide list is not UTF-8 text") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [p if p.is_absolute() else path.parent / p for p in map(Path, entries)]


def expand_slides(arguments: Sequence[str | Path]) -> list[Path]:
    """Slide files from ``arguments``, in the order given (a folder's or pattern's matches sorted), each once.

    A folder contributes its slide files (by suffix, not recursive); a pattern with ``*``, ``?`` or ``[`` its
    matches; a ``.txt``/``.lst``/``.list`` file one path per line; anything else is taken as a slide file. An
    argument that yields no slide is a one-line error naming it."""
    slides: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir() and not (path / "Slidedat.ini").exists():  # a folder of slides, not a MIRAX one
            found = sorted(p for p in path.iterdir() if _is_slide(p))
            if not found:
                raise InputError(path, f"folder holds no slide file ({', '.join(SLIDE_SUFFIXES)})")
        elif not path.exists() and glob.has_magic(str(argument)):
            found = sorted(Path(p) for p in glob.glob(str(argument)) if _is_slide(Path(p)))
            if not found:
                raise InputError(path, "pattern matches no slide file")
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            found = _read_list(path)
            if not found:
                raise InputError(path, "slide list is empty")
        else:
            found = [path]
        slides.extend(found)
    return list(dict.fromkeys(slides))
