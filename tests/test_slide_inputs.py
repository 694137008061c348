"""Slides given as files, folders, glob patterns or list files, read one way."""

from __future__ import annotations

from pathlib import Path

import pytest

from histoeq.errors import InputError
from histoeq.slide.inputs import expand_slides


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    folder = tmp_path / "slides"
    folder.mkdir()
    for name in ("b.svs", "a.tiff", "c.ndpi", "notes.md"):
        (folder / name).write_bytes(b"x")
    return folder


def test_folder_pattern_list_and_file(cohort: Path, tmp_path: Path) -> None:
    assert [p.name for p in expand_slides([cohort])] == ["a.tiff", "b.svs", "c.ndpi"]
    assert [p.name for p in expand_slides([str(cohort / "*.svs")])] == ["b.svs"]
    listing = tmp_path / "cohort.txt"
    listing.write_text("# study A\nslides/c.ndpi\n\n" + str(cohort / "a.tiff") + "\n")
    assert expand_slides([listing]) == [cohort / "c.ndpi", cohort / "a.tiff"]
    # given twice, predicted once; order as given
    assert expand_slides([cohort / "b.svs", cohort, listing])[:2] == [cohort / "b.svs", cohort / "a.tiff"]
    assert len(expand_slides([cohort / "b.svs", cohort, listing])) == 3


@pytest.mark.parametrize("make", ["empty folder", "no match", "empty list"])
def test_an_argument_without_slides_is_named(tmp_path: Path, make: str) -> None:
    if make == "empty folder":
        argument = tmp_path / "empty"
        argument.mkdir()
    elif make == "no match":
        argument = tmp_path / "*.svs"
    else:
        argument = tmp_path / "list.txt"
        argument.write_text("# nothing\n")
    with pytest.raises(InputError) as info:
        expand_slides([argument])
    assert info.value.path == str(argument)
