"""Limits that keep a hostile or broken input file from hanging histoeq or exhausting its memory.

A few kilobytes of file can claim gigabytes: a strip TIFF header promises 38000 x 38000 px, a PNG header 40000 x
40000, a TIFF's directory chain loops back on itself or lists thousands of pages that tifffile's series parsing
visits in quadratic time. Each such claim is checked here from the file's header, before any decoder is handed the
file, and refused in one line that names the file, the budget and how to raise it.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np

from histoeq.errors import InputError

DECODE_BUDGET_ENV = "HISTOEQ_DECODE_BUDGET_GB"
DEFAULT_DECODE_BUDGET_GB = 2.0
# Whole-slide pyramids have a handful of pages (SVS 4-6, NDPI ~10, OME-TIFF a few per channel); thousands of pages
# are a stack or a crafted file, and tifffile's series parsing is quadratic in their number.
MAX_TIFF_PAGES = 1024
SUBIFDS_TAG = 330


def decode_budget() -> int:
    """Bytes one decode may allocate: HISTOEQ_DECODE_BUDGET_GB (GiB) when set, else 2 GiB."""
    raw = os.environ.get(DECODE_BUDGET_ENV, "").strip()
    if not raw:
        return int(DEFAULT_DECODE_BUDGET_GB * 2**30)
    try:
        gib = float(raw)
    except ValueError:
        raise InputError(None, f"{DECODE_BUDGET_ENV} must be a number of GiB, got {raw!r}") from None
    if not gib > 0:
        raise InputError(None, f"{DECODE_BUDGET_ENV} must be positive, got {raw!r}")
    return int(gib * 2**30)


def check_decode(path: str | Path, what: str, nbytes: int) -> None:
    """Refuse a decode of `nbytes` (e.g. width x height x channels x bytes per sample) over the decode budget."""
    budget = decode_budget()
    if nbytes > budget:
        raise InputError(path, f"decoding {what} needs {_gib(nbytes)} of memory, over the {_gib(budget)} decode "
                               f"budget (raise it with {DECODE_BUDGET_ENV}=<GiB>, or convert the image to a tiled "
                               "pyramid, e.g. vips tiffsave --tile --pyramid)")


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_tiff_structure(path: str | Path, max_pages: int = MAX_TIFF_PAGES) -> int:
    """Walk the TIFF's directory chain (and SubIFD chains) by offsets alone; returns the number of directories.

    tifffile's own loop detection only looks back when a chain reaches 100 pages, and its series parsing follows a
    chain of differently sized pages that loops (IFD1 -> IFD0) for ever; this walk remembers every directory it has
    seen, so a loop or a page count beyond `max_pages` is refused before tifffile parses series. Offsets past the
    end of the file end a chain here as they do in tifffile (which reports the truncation itself).
    """
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(16)
        order = {b"II": "<", b"MM": ">"}.get(head[:2])
        if order is None or len(head) < 8:
            return 0
        version = struct.unpack(order + "H", head[2:4])[0]
        if version == 43:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
            count_fmt, entry_size, offset_fmt = "Q", 20, "Q"
            first = struct.unpack(order + "Q", head[8:16])[0]
        else:
            count_fmt, entry_size, offset_fmt = "H", 12, "I"
            first = struct.unpack(order + "I", head[4:8])[0]
        count_size, offset_size = struct.calcsize(count_fmt), struct.calcsize(offset_fmt)
        seen: set[int] = set()
        chains = [first]
        while chains:
            offset = chains.pop()
            chain: set[int] = set()
            # A chain that comes back on itself is a loop; one that reaches a directory another chain walked (a
            # SubIFD both listed and chained, as some writers do) has nothing new to add.
            while 0 < offset < size and not (offset in seen and offset not in chain):
                if offset in chain:
                    raise InputError(path, f"corrupt TIFF: its page directories form a loop (back to byte {offset})")
                chain.add(offset)
                seen.add(offset)
                if len(seen) > max_pages:
                    raise InputError(path, f"TIFF has more than {max_pages} pages; a slide has a few pyramid levels "
                                           "(split the stack into one file per image)")
                fh.seek(offset)
                raw = fh.read(count_size)
                if len(raw) < count_size:
                    break
                entries = struct.unpack(order + count_fmt, raw)[0]
                block = fh.read(entries * entry_size + offset_size)
                if len(block) < entries * entry_size + offset_size:
                    break
                chains += _subifd_offsets(fh, order, block, entries, entry_size, offset_fmt, size)
                offset = struct.unpack(order + offset_fmt, block[-offset_size:])[0]
    return len(seen)


def _subifd_offsets(fh: object, order: str, block: bytes, entries: int, entry_size: int, offset_fmt: str,
                    size: int) -> list[int]:
    """Offsets listed by a directory's SubIFDs tag (the pyramid levels of OME-TIFF and others)."""
    offset_size = struct.calcsize(offset_fmt)
    for i in range(entries):
        entry = block[i * entry_size:(i + 1) * entry_size]
        if struct.unpack(order + "H", entry[:2])[0] != SUBIFDS_TAG:
            continue
        kind = struct.unpack(order + "H", entry[2:4])[0]
        count = struct.unpack(order + offset_fmt, entry[4:4 + offset_size])[0]
        item = {4: "I", 13: "I", 16: "Q", 18: "Q"}.get(kind)
        if item is None or count == 0:
            return []
        count = min(count, MAX_TIFF_PAGES + 1)  # more than that is refused by the caller's page count anyway
        nbytes = count * struct.calcsize(item)
        value = entry[4 + offset_size:]
        if nbytes > offset_size:
            where = struct.unpack(order + offset_fmt, value)[0]
            if where + nbytes > size:
                return []
            fh.seek(where)
            value = fh.read(nbytes)
        return list(struct.unpack(order + item * count, value[:nbytes]))
    return []


# A JSON string, escapes included, written as the unrolled loop that Python's regex engine runs without backtracking.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_DEPTH_CHUNK = 1 << 24


def json_depth(text: bytes) -> int:
    """How deeply `text`'s arrays and objects nest, counted over the text without parsing it.

    Python's json parser recurses once per level, so a document 100,000 levels deep is a RecursionError deep in the
    parser; counting brackets outside strings first lets the caller refuse it with a budget instead."""
    brackets = np.frombuffer(_JSON_STRING.sub(b'""', text), np.uint8)
    depth = deepest = 0
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        chunk = brackets[start:start + _DEPTH_CHUNK]
        step = ((chunk == ord("[")) | (chunk == ord("{"))).astype(np.int32) - (
            (chunk == ord("]")) | (chunk == ord("}")))
        levels = np.cumsum(step, dtype=np.int64) + depth
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def check_json_text(path: str | Path, text: bytes, what: str, max_bytes: int, max_depth: int) -> None:
    """Refuse JSON `text` larger than `max_bytes` or nested deeper than `max_depth`, before it is parsed."""
    if len(text) > max_bytes:
        raise InputError(path, f"{what} is {len(text) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB budget")
    depth = json_depth(text)
    if depth > max_depth:
        raise InputError(path, f"{what} nests {depth} levels deep, over the budget of {max_depth}")
