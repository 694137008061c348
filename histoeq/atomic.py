"""Atomic output files: every result is written to a temporary name in the target folder and renamed over the
target, so an interrupted or failed command never leaves a half-written file (a reader sees the old file or the
new one).

A process killed mid-write (SIGKILL, power loss) cannot remove its temporary, so temporaries carry a recognisable
name, ``.<target>.<host>.<pid>-<random>.histoeq-tmp[<suffix>]``, and the next command that checks the folder
(`check_output_dir` / `check_output_file`) removes those whose process is gone, or that are over a day old."""

from __future__ import annotations

import errno
import os
import re
import socket
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from histoeq.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)
TEMP_MARK = ".histoeq-tmp"
# A folder may be shared between machines: a process id means something only on the host that wrote it.
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)-[^.]+" + re.escape(TEMP_MARK) + r"(\..*)?$")
STALE_TEMP_S = 24 * 3600  # older than this, a temporary is stale on any host (and its pid possibly reused)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    For writers that want a file name (matplotlib's savefig, ``np.save``). ``suffix`` keeps the extension a writer
    may infer the format from."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "cannot write the output: is a directory")
    tmp = _temp_beside(path, suffix)
    try:
        with _writing(path):
            yield tmp
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# Errors of the output's file system (full, read-only, over quota, file too large): the writer inside an atomic
# block can only have hit them writing the output, so they are reported as the output's problem. Other OSErrors
# pass through unchanged.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise _write_error(path, exc) from None
        raise


def _temp_beside(path: Path, suffix: str) -> Path:
    """An empty temporary file in `path`'s folder (created if needed), so the final rename stays on one file system."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}-", suffix=TEMP_MARK + suffix,
                                   dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    """Rename the finished temporary over `path`."""
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc) from None


@contextmanager
def atomic_paths(paths: Sequence[str | Path], suffix: str = "") -> Iterator[list[Path]]:
    """`atomic_path` for files that only make sense together (one slide's results): yield a temporary path per
    target; on success they are renamed in the given order (put a completion marker last), on error none of the
    targets is left, neither a temporary nor one already renamed, so no reader sees a partial set."""
    targets = [Path(p) for p in paths]
    for path in targets:
        if path.is_dir():
            raise InputError(path, "cannot write the output: is a directory")
    tmps: list[Path] = []
    try:
        for path in targets:
            tmps.append(_temp_beside(path, suffix))
        try:
            with _writing(targets[0].parent):
                yield list(tmps)
        except InputError as exc:  # a writer that wrote a temporary atomically in turn names it: name the target
            named = {str(tmp): path for tmp, path in zip(tmps, targets)}
            if exc.path in named:
                raise InputError(named[exc.path], exc.problem) from None
            raise
        renamed: list[Path] = []
        for tmp, path in zip(tmps, targets, strict=True):
            try:
                _publish(tmp, path)
            except InputError:
                for done in renamed:
                    done.unlink(missing_ok=True)
                raise
            renamed.append(path)
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)


def _write_error(path: Path, exc: OSError) -> InputError:
    """The OSError of creating or renaming an output as one line naming the output (not the temporary name)."""
    return InputError(path, f"cannot write the output ({exc.strerror or type(exc).__name__})")


def check_output_dir(folder: str | Path) -> Path:
    """Fail before any long work when results could not be written to `folder` (created later if missing).

    The folder, or its nearest existing ancestor, must be a directory in which a file can be created. Writability
    is tested by creating (and removing) a temporary file rather than with `os.access`, which says yes to root
    even in a read-only folder and ignores other rules a file system may apply."""
    return _check_folder(Path(folder), Path(folder))


def check_output_file(path: str | Path) -> Path:
    """`check_output_dir` for the folder of one output file, which itself must not be a directory."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "cannot write the output: is a directory")
    _check_folder(path.parent, path)
    return path


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove this program's temporaries in `folder` left by killed processes: those of this host whose process no
    longer runs, and any over a day old. Returns what was removed; a folder that cannot be listed is left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None:
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S
            dead = match["host"] == _HOST and not _running(int(match["pid"]))
            if (old or dead) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # removed meanwhile, or not ours to remove
            continue
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _check_folder(folder: Path, named: Path) -> Path:
    if folder.is_dir():
        remove_stale_temps(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():  # a dangling link: mkdir would fail on it
            raise InputError(named, f"cannot write the output: {probe} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        detail = "is not a directory" if probe == named else f"{probe} is a file, not a directory"
        raise InputError(named, f"cannot write the output: {detail}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".histoeq-write-check.", dir=probe)
    except OSError as exc:
        raise InputError(named, f"cannot write the output ({exc.strerror or type(exc).__name__} in {probe})") from None
    os.close(fd)
    os.unlink(tmp)
    return folder


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


def write_atomically(path: Path, write: Callable[[IO[Any]], None], binary: bool = False) -> None:
    """Call `write` on a temporary file next to `path`, then rename it over `path` (never a half-written file)."""
    with atomic_open(path, binary=binary) as fh:
        write(fh)
