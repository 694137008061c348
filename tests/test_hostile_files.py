"""Checkpoints, annotations and model metadata that claim more than they hold: one error line, no big allocation."""

from __future__ import annotations

import time

import pytest

from histoeq.errors import InputError
from tests import hostile


def test_checkpoint_zip_bomb_is_refused_from_its_directory(tmp_path):
    from histoeq.train.checkpoint import load_checkpoint

    path = hostile.zip_bomb_checkpoint(tmp_path / "bomb.pt", 600 << 20)
    assert path.stat().st_size < 2 << 20
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"unpacks to 0\.6 GiB from 0\.\d MiB"):
        load_checkpoint(path)
    assert time.perf_counter() - start < 2


def test_ordinary_checkpoint_passes_the_archive_check(tmp_path):
    import torch

    from histoeq.train.checkpoint import check_archive_budget

    torch.save({"weights": torch.zeros(1 << 20)}, tmp_path / "ok.pt")
    check_archive_budget(tmp_path / "ok.pt")


def _features(coords_per_feature: int, features: int) -> str:
    ring = [[i, i % 7] for i in range(coords_per_feature)]
    feature = {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
               "geometry": {"type": "Polygon", "coordinates": [ring]}}
    import json

    return json.dumps({"type": "FeatureCollection", "features": [feature] * features})


def test_annotation_budgets(tmp_path, monkeypatch):
    from histoeq.data import annotations
    from histoeq.data.annotations import RegionAnnotations

    deep = tmp_path / "deep.geojson"
    deep.write_text(hostile.nested_json(100_000))
    with pytest.raises(InputError, match=r"deep.geojson: annotation file nests 100000 levels deep, over the budget of 64"):
        RegionAnnotations.load(deep)
    many = tmp_path / "many.geojson"
    many.write_text(_features(1000, 30))
    monkeypatch.setattr(annotations, "MAX_ANNOTATION_VERTICES", 20_000)
    with pytest.raises(InputError, match="many.geojson: annotations have more than 20,000 vertices"):
        RegionAnnotations.load(many)
    monkeypatch.setattr(annotations, "MAX_ANNOTATION_BYTES", 1000)
    with pytest.raises(InputError, match=r"many.geojson: annotation file is 0 MiB, over the 0 MiB budget"):
        RegionAnnotations.load(many)


def test_annotation_within_budget_with_brackets_in_strings(tmp_path):
    """Brackets inside strings (a class called "[[[") do not count as nesting."""
    from histoeq.data.annotations import RegionAnnotations

    path = tmp_path / "ok.geojson"
    path.write_text(_features(5, 2).replace('"Tumor"', '"' + "[" * 200 + '"'))
    assert RegionAnnotations.load(path).classes == ["[" * 200]


def test_model_metadata_budgets():
    from histoeq.export.metadata import parse_metadata

    deep = '{"format": "histoeq-onnx", "x": ' + hostile.nested_json(100_000) + "}"
    with pytest.raises(InputError, match="m.onnx: histoeq metadata nests 100001 levels deep, over the budget of 32"):
        parse_metadata({"histoeq": deep}, "m.onnx")
    big = '{"format": "histoeq-onnx", "x": "' + "a" * (5 << 20) + '"}'
    with pytest.raises(InputError, match=r"m.onnx: histoeq metadata is 5.0 MiB, over the 4 MiB budget"):
        parse_metadata({"histoeq": big}, "m.onnx")
