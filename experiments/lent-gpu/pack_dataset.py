"""Pack a histoeq dataset into JPEG mosaics small enough to travel to a lent GPU machine (≤ 64 MiB), and unpack it.

The device tool copies at most 64 MiB with the working tree, and the IDC dataset is 210 MB of raw uint8. Patches
go into 56×56 cells (edge-padded, so JPEG's 8×8 blocks never straddle two patches), 32×32 cells per JPEG,
quality 95 without chroma subsampling. The index and metadata travel unchanged. This is lossy: results computed
on the unpacked copy are labelled as such; the shipped model is re-evaluated on the original data.

    python experiments/lent-gpu/pack_dataset.py pack .work/idc .work/idc-pack 85     # JPEG quality, default 95
    python experiments/lent-gpu/pack_dataset.py unpack .work/idc-pack /tmp/idc
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CELL, GRID = 56, 32


def pack(src: Path, dst: Path, quality: int = 95) -> None:
    images = np.load(src / "images.npy", mmap_mode="r")
    n, h, w, _ = images.shape
    dst.mkdir(parents=True, exist_ok=True)
    per = GRID * GRID
    for start in range(0, n, per):
        chunk = np.asarray(images[start:start + per])
        padded = np.pad(chunk, ((0, per - len(chunk)), (0, CELL - h), (0, CELL - w), (0, 0)), mode="edge")
        mosaic = padded.reshape(GRID, GRID, CELL, CELL, 3).transpose(0, 2, 1, 3, 4).reshape(GRID * CELL, GRID * CELL, 3)
        Image.fromarray(mosaic).save(dst / f"mosaic_{start // per:04d}.jpg", quality=quality, subsampling=0)
    for name in ("index.csv", "meta.json"):
        shutil.copy(src / name, dst / name)
    (dst / "pack.json").write_text(json.dumps({"n": n, "tile": [h, w], "cell": CELL, "grid": GRID, "quality": quality}))


def unpack(src: Path, dst: Path) -> None:
    info = json.loads((src / "pack.json").read_text())
    n, (h, w) = info["n"], info["tile"]
    dst.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(dst / "images.npy", mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
    per = GRID * GRID
    for i, path in enumerate(sorted(src.glob("mosaic_*.jpg"))):
        mosaic = np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))
        cells = mosaic.reshape(GRID, CELL, GRID, CELL, 3).transpose(0, 2, 1, 3, 4).reshape(per, CELL, CELL, 3)
        count = min(per, n - i * per)
        out[i * per:i * per + count] = cells[:count, :h, :w]
    out.flush()
    meta = json.loads((src / "meta.json").read_text())
    meta.setdefault("provenance", {})["transport"] = (
        f"JPEG q{info['quality']} copy (experiments/lent-gpu/pack_dataset.py)"
    )
    (dst / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.copy(src / "index.csv", dst / "index.csv")


if __name__ == "__main__":
    verb, a, b = sys.argv[1:4]
    if verb == "pack":
        # An optional 4th argument: JPEG quality (85 fits the IDC set, the code and the wheels into 64 MiB).
        pack(Path(a), Path(b), *(int(q) for q in sys.argv[4:5]))
    else:
        unpack(Path(a), Path(b))
