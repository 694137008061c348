"""`histoeq bench extract` prints OpenSlide read-only and extraction throughput of the same tiles, and their ratio.

No speed is asserted: a unit test on 2 shared CPU cores cannot time reliably (a looser 0.5 floor here failed
while training jobs ran beside the suite). The figures in the report come from the CLI run by hand.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_cli


@pytest.mark.realdata
def test_bench_extract_prints_both_rates(idc_dir, capsys):
    code, out, err = run_cli(["bench", "extract", idc_dir / "slides" / "9124.tiff", "--annotations",
                              idc_dir / "slides", "--min-tissue", 0, "--origin", "1,1"], capsys)
    assert code == 0, err
    assert "openslide read_region only" in out and "histoeq extract (all steps)" in out
    ratio = float(re.search(r"ratio extract / read-only: ([0-9.]+)", out).group(1))
    assert ratio > 0, out


def test_bench_extract_needs_openslide_readable(tmp_path, capsys):
    import numpy as np
    import tifffile

    path = tmp_path / "strip.tif"  # OpenSlide refuses untiled TIFFs
    tifffile.imwrite(path, np.full((64, 64, 3), 200, np.uint8), resolution=(1e4, 1e4), resolutionunit="CENTIMETER")
    code, _, err = run_cli(["bench", "extract", path], capsys)
    assert code == 2 and err.startswith(f"error: {path}: OpenSlide cannot read this slide")
