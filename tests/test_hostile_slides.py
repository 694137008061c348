"""Slides that claim more than they hold: each must end in one error line, fast and within a small memory limit."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from histoeq.errors import InputError
from histoeq.slide import open_slide
from histoeq.slide.budget import check_tiff_structure
from tests import hostile

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 1536 << 20  # address space for the child: far below what the hostile files ask for


def run_limited(code: str, timeout: float = 120, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run `code` in a child Python under RLIMIT_AS; returns (exit code, stderr, seconds)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, LIMIT_BYTES))

    wrapped = ("import sys\nfrom histoeq.errors import HistoeqError\ntry:\n"
               + "".join(f"    {line}\n" for line in code.splitlines())
               + "except HistoeqError as exc:\n    print('error:', exc, file=sys.stderr)\n    sys.exit(2)\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit, cwd=REPO, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    return proc.returncode, proc.stderr, time.perf_counter() - start


def assert_refused(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_looping_page_directories_are_refused_not_followed(tmp_path):
    path = hostile.looped_tiff(tmp_path / "loop.tif")
    code, err, seconds = run_limited(f"from histoeq.slide import open_slide\nopen_slide({str(path)!r}, mpp=1.0)",
                                     timeout=60)
    assert_refused(code, err, "loop.tif", "loop")
    assert seconds < 30


def test_too_many_pages_are_refused_before_series_parsing(tmp_path):
    path = hostile.many_pages_tiff(tmp_path / "stack.tif", 1100)
    start = time.perf_counter()
    with pytest.raises(InputError, match="more than 1024 pages"):
        open_slide(path, mpp=1.0)
    assert time.perf_counter() - start < 2


def test_directory_walk_counts_main_and_subifd_pages(tmp_path):
    """A tifffile-written SubIFD pyramid is walked without a false loop, every level counted once."""
    image = np.zeros((256, 256, 3), np.uint8)
    with tifffile.TiffWriter(tmp_path / "sub.tif") as tif:
        tif.write(image, subifds=2, tile=(64, 64))
        tif.write(image[::2, ::2], subfiletype=1, tile=(64, 64))
        tif.write(image[::4, ::4], subfiletype=1, tile=(64, 64))
        tif.write(image[:32, :32])
    assert check_tiff_structure(tmp_path / "sub.tif") == 4
    with open_slide(tmp_path / "sub.tif", mpp=1.0) as slide:
        assert slide.level_count == 3


@pytest.mark.parametrize("kind", ["strip-8bit", "strip-16bit", "png"])
def test_images_whose_header_promises_gigabytes_are_refused_within_memory(tmp_path, kind):
    """21 KB claiming 38000 x 38000 px (4.3 GB of RGB), 16-bit samples, a 65-byte PNG header claiming 40000^2."""
    if kind == "png":
        path = hostile.big_png(tmp_path / "big.png", 40000, 40000)
    else:
        bits, side = (8, 38000) if kind == "strip-8bit" else (16, 27000)
        path = hostile.strip_tiff(tmp_path / "big.tif", side, side, bits=bits, rows_per_strip=16)
    code, err, _ = run_limited(f"from histoeq.slide import open_slide\n"
                               f"with open_slide({str(path)!r}, mpp=1.0) as s:\n    s.thumbnail(2048)")
    assert_refused(code, err, path.name, "decode budget", "HISTOEQ_DECODE_BUDGET_GB")


def test_strip_image_over_the_budget_is_refused_when_read(tmp_path, monkeypatch):
    """A strip level whose overview fits but whose whole-level decode (samples + RGB) does not."""
    path = hostile.strip_tiff(tmp_path / "strip.tif", 200, 100, bits=16)
    monkeypatch.setenv("HISTOEQ_DECODE_BUDGET_GB", str(150_000 / 2**30))  # 60 kB RGB overview, 180 kB decode
    with open_slide(path, mpp=1.0) as slide, pytest.raises(InputError, match="200 x 100 px strip image"):
        slide.thumbnail(64)
    monkeypatch.setenv("HISTOEQ_DECODE_BUDGET_GB", "1")
    with open_slide(path, mpp=1.0) as slide:
        assert slide.thumbnail(64)[0].shape == (32, 64, 3)


def test_png_is_not_decoded_to_learn_its_size(tmp_path, monkeypatch):
    """Opening for geometry (as predict's up-front check does) reads the header only; pixels decode once."""
    from PIL import Image

    from histoeq.slide import backends

    Image.fromarray(np.full((30, 40, 3), 7, np.uint8)).save(tmp_path / "small.png")
    loads = []
    real = backends.to_rgb8
    monkeypatch.setattr(backends, "to_rgb8", lambda arr, *a, **k: loads.append(1) or real(arr, *a, **k))
    with open_slide(tmp_path / "small.png", mpp=1.0) as slide:
        assert slide.dimensions == (40, 30) and not loads
        slide.read_region((0, 0), (40, 30), 1.0)
        slide.read_region((5, 5), (10, 10), 1.0)
    assert len(loads) == 1
    data = (tmp_path / "small.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png: not a readable image"):  # still refused at open, not mid-run
        open_slide(tmp_path / "cut.png", mpp=1.0)


def test_grey_slide_is_named_as_grey_when_no_tissue_is_found(tmp_path, capsys):
    """Tissue is found by stain colour: a greyscale scan with visible structure must say it is grey."""
    import json

    from tests.conftest import assert_one_line_error, run_cli

    grey = np.full((400, 600), 245, np.uint8)
    grey[100:300, 100:500] = 120  # a tissue-like dark block, without colour
    tifffile.imwrite(tmp_path / "grey.tiff", np.repeat(grey[:, :, None], 3, axis=2), photometric="rgb",
                     resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    square = [[[100, 100], [500, 100], [500, 300], [100, 300], [100, 100]]]
    (tmp_path / "grey.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square},
         "properties": {"classification": {"name": "Tumour"}}}]}))
    code, _, err = run_cli(["extract", tmp_path / "grey.tiff", "--annotations", tmp_path / "grey.geojson",
                            "--out", tmp_path / "ds", "--mpp", 1.0, "--patch-size", 50], capsys)
    assert_one_line_error(code, err, "grey.tiff", "no tissue found", "greyscale")


def test_error_lines_are_printable_and_cut_at_words():
    from histoeq.errors import clip, one_line

    message = ("Weights only load failed. This file can still be loaded, to do so you have two options, "
               "\x1b[1mdo those steps only if you trust the source\x1b[0m.\n\t(1) In PyTorch 2.6")
    cut = clip(message, 100)
    assert len(cut) <= 100 and cut.endswith(" do those…") and "\x1b" not in cut and "(1)" not in cut
    assert one_line("slide\x1b]0;pwned\x07.svs: bad\x1b[31m red\nnext") == "slide .svs: bad red next"
