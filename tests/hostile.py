"""Small generated files that claim far more than they hold: looping or endless TIFF directories, images whose
headers promise gigabytes, zip bombs, deeply nested JSON. Each is a few kilobytes, so tests can make them freely."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

# TIFF tag numbers and field types used below (TIFF 6.0).
SHORT, LONG = 3, 4
WIDTH, LENGTH, BITS, COMPRESSION, PHOTOMETRIC = 256, 257, 258, 259, 262
STRIP_OFFSETS, SAMPLES, ROWS_PER_STRIP, STRIP_COUNTS, PLANAR, SAMPLE_FORMAT = 273, 277, 278, 279, 284, 339
DEFLATE = 8


def _ifd(entries: list[tuple[int, int, list[int]]], at: int, next_ifd: int) -> tuple[bytes, bytes]:
    """One classic little-endian IFD placed at byte `at`: (directory bytes, out-of-line values following it)."""
    entries = sorted(entries)
    size = 2 + 12 * len(entries) + 4
    extra = b""
    body = struct.pack("<H", len(entries))
    for tag, kind, values in entries:
        fmt = "H" if kind == SHORT else "I"
        packed = struct.pack(f"<{len(values)}{fmt}", *values)
        if len(packed) <= 4:
            body += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", tag, kind, len(values), at + size + len(extra))
            extra += packed
    return body + struct.pack("<I", next_ifd), extra


def strip_tiff(path: Path, width: int, height: int, *, bits: int = 8, samples: int = 3, sample_format: int = 1,
               rows_per_strip: int | None = None, pages: int = 1, halving: bool = False, loop: bool = False) -> Path:
    """A strip TIFF of `pages` images of `width` x `height` whose strips all point at one deflate block of zeros,
    so the file stays small whatever size it claims. `halving`: each page is half the previous one's size (a
    pyramid). `loop`: the last directory points back at the first."""
    rows = rows_per_strip or height
    bytes_per_row = width * samples * bits // 8
    block = zlib.compress(bytes(bytes_per_row * rows), 9)
    out = bytearray(b"II*\0" + struct.pack("<I", 0))
    data_at = len(out)
    out += block
    first = None
    previous_next_at = 4
    for page in range(pages):
        if halving and page:
            width, height = max(1, width // 2), max(1, height // 2)
            rows = min(rows, height)
        strips = -(-height // rows)
        at = len(out) + (len(out) & 1)
        out += b"\0" * (at - len(out))
        struct.pack_into("<I", out, previous_next_at, at)
        first = first if first is not None else at
        entries = [
            (WIDTH, LONG, [width]), (LENGTH, LONG, [height]), (BITS, SHORT, [bits] * samples),
            (COMPRESSION, SHORT, [DEFLATE]), (PHOTOMETRIC, SHORT, [2 if samples >= 3 else 1]),
            (STRIP_OFFSETS, LONG, [data_at] * strips), (SAMPLES, SHORT, [samples]), (ROWS_PER_STRIP, LONG, [rows]),
            (STRIP_COUNTS, LONG, [len(block)] * strips), (PLANAR, SHORT, [1]),
            (SAMPLE_FORMAT, SHORT, [sample_format] * samples),
        ]
        body, extra = _ifd(entries, at, 0)
        out += body + extra
        previous_next_at = at + len(body) - 4
    if loop:
        struct.pack_into("<I", out, previous_next_at, first)
    path.write_bytes(bytes(out))
    return path


def looped_tiff(path: Path) -> Path:
    """An 8 x 8 and a 4 x 4 page whose second directory points back at the first (IFD1 -> IFD0): tifffile's series
    parsing follows that chain for ever."""
    return strip_tiff(path, 8, 8, pages=2, halving=True, loop=True)


def many_pages_tiff(path: Path, pages: int) -> Path:
    """`pages` tiny 8 x 8 pages: parsing them as series costs time quadratic in the count."""
    return strip_tiff(path, 8, 8, pages=pages)


def big_png(path: Path, width: int, height: int) -> Path:
    """A valid RGB PNG header (and one empty IDAT) claiming `width` x `height`: decoding it would need w*h*3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def zip_bomb_checkpoint(path: Path, unpacked_bytes: int) -> Path:
    """A torch-style zip whose one member unpacks to `unpacked_bytes` zeros (deflate packs them ~1000:1)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        with zf.open("archive/data/0", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(unpacked_bytes >> 20):
                member.write(chunk)
    path.write_bytes(buffer.getvalue())
    return path


def nested_json(depth: int) -> str:
    """A JSON document of `depth` nested lists."""
    return "[" * depth + "]" * depth


def model_with_metadata(source: Path, path: Path, **changes: object) -> Path:
    """A copy of the exported ONNX model `source` whose histoeq metadata document has `changes` merged in (as a
    foreign or edited file would carry them), written to `path`."""
    import json

    import onnx

    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        if prop.key == "histoeq":
            prop.value = json.dumps({**json.loads(prop.value), **changes})
    onnx.save(proto, str(path))
    return path
