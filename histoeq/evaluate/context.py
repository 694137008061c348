"""Context squares around dataset patches, read from their slides when reachable.

Rotating a patch by a non-multiple of 90 degrees needs pixels beyond its corners. When the dataset knows where a
patch came from (index `slide`, `x`, `y`, `mpp`) and the slide file can be found (``--slides DIR`` or a folder named
in meta.json provenance; a patch without a slide name uses its patient id, as IDC has one slide per patient), we read a
larger square centred on the patch at the patch's scale and paste the stored patch (bit-exact) into its centre, so the
unrotated view is the dataset patch itself and only the border comes from the slide. Patches without a reachable slide
get reflect padding; the caller reports how many of each.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from histoeq.errors import InputError
from histoeq.evaluate.rotations import context_size, reflect_context
from histoeq.progress import ProgressFn, null_progress
from histoeq.slide import open_slide
from histoeq.slide.backends import SLIDE_SUFFIXES


def candidate_slide_dirs(meta: dict[str, Any], dataset_path: Path, slides: Path | None) -> list[Path]:
    """Where to look for slides: --slides first, then folders named in meta.json provenance (and their slides/)."""
    dirs: list[Path] = []
    if slides is not None:
        if not Path(slides).is_dir():
            raise InputError(slides, "--slides is not a folder")
        dirs.append(Path(slides))
    provenance = meta.get("provenance") or {}
    values = provenance.values() if isinstance(provenance, dict) else []
    for value in values:
        if not isinstance(value, str) or not value:
            continue
        for base in (Path(value), dataset_path / value):
            for folder in (base, base / "slides"):
                if folder.is_dir() and folder not in dirs:
                    dirs.append(folder)
    return dirs


def find_slide(name: str, dirs: list[Path]) -> Path | None:
    if not name:
        return None
    direct = Path(name)
    if direct.is_file():
        return direct
    for folder in dirs:
        for suffix in ("", *SLIDE_SUFFIXES):  # "": the name already has its suffix
            path = folder / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


def build_contexts(images: torch.Tensor, rows: pd.DataFrame, meta: dict[str, Any], dataset_path: Path,
                   slides: Path | None = None, progress: ProgressFn = null_progress) -> tuple[torch.Tensor, dict]:
    """uint8 (N,S,S,3) context squares for uint8 (N,H,W,3) `images` and their index `rows`.

    Returns (contexts, counts) with counts = {"slide": n, "reflect": n}; a slide found through the dataset's
    provenance that cannot be read counts its patches as reflect-padded, one in the `slides` folder is an error.
    """
    tile = int(images.shape[1])
    size = context_size(tile)
    contexts = reflect_context(images, size)
    dirs = candidate_slide_dirs(meta, dataset_path, slides)
    from_slide = np.zeros(len(rows), dtype=bool)
    if dirs:
        rows = rows.reset_index(drop=True)
        # No slide recorded (e.g. IDC imported from patch PNGs): one slide per patient, named by the patient id.
        names = rows["slide"].astype(str).where(rows["slide"].astype(str).ne(""), rows["patient"].astype(str))
        usable = (rows["x"] >= 0) & (rows["y"] >= 0) & names.ne("")
        groups = rows[usable].groupby(names[usable])
        done = 0
        for name, part in groups:
            path = find_slide(str(name), dirs)
            if path is None:
                continue
            try:
                with open_slide(path) as slide:
                    slide_mpp = slide.mpp
                    off = (size - tile) // 2
                    for pos, row in part.iterrows():
                        mpp = float(row["mpp"]) if pd.notna(row["mpp"]) else float(meta.get("mpp") or slide_mpp)
                        scale = mpp / slide_mpp  # level-0 px per patch px
                        x0 = int(round(row["x"] - off * scale))
                        y0 = int(round(row["y"] - off * scale))
                        square = slide.read_region((x0, y0), (size, size), mpp)
                        square = np.array(square[..., :3], dtype=np.uint8, copy=True)
                        square[off:off + tile, off:off + tile] = images[pos].numpy()
                        contexts[pos] = torch.from_numpy(square)
                        from_slide[pos] = True
                        done += 1
                        if done % 256 == 0:
                            progress("context", done, int(usable.sum()), "reading slide context")
            except (InputError, OSError, ValueError) as exc:
                # A slide the user pointed at with --slides must be usable; one found through the dataset's
                # provenance may have moved or changed, and its patches fall back to reflect padding.
                if slides is None or Path(slides).resolve() not in path.resolve().parents:
                    continue
                if isinstance(exc, InputError):
                    raise
                raise InputError(path, f"unreadable slide ({exc})") from None
    counts = {"slide": int(from_slide.sum()), "reflect": int((~from_slide).sum())}
    return contexts, counts


def describe_context(counts: dict[str, int]) -> str:
    if counts["reflect"] == 0:
        return "slide context (rotated patches show real tissue beyond the patch corners)"
    if counts["slide"] == 0:
        return "reflect padding (no slide reachable: corners of non-90-degree rotations are mirrored patch content)"
    share = counts["slide"] / max(1, counts["slide"] + counts["reflect"])
    return f"slide context for {math.floor(share * 100)}% of patches, reflect padding for the rest"
