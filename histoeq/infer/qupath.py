"""QuPath conventions for the GeoJSON histoeq writes: class colours and object ids."""

from __future__ import annotations

import uuid

# Okabe & Ito's colour-blind-safe palette (blue, orange, sky blue, bluish green, reddish purple, yellow): the first
# two classes (negative, positive in a binary model) never meet as red against green.
CLASS_COLOURS = [[0, 114, 178], [230, 159, 0], [86, 180, 233], [0, 158, 115], [204, 121, 167], [240, 228, 66]]


def class_colour(index: int) -> list[int]:
    """QuPath RGB of the class at `index` of a model's class list."""
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def feature_ids(count: int, base: uuid.UUID | None = None) -> list[str]:
    """`count` distinct UUID strings for QuPath object ids: one random UUID (or `base`) with its last 48 bits
    replaced by the feature's index, so a file's ids are unique and cost no per-feature random draw."""
    prefix = str(base or uuid.uuid4())[:24]
    return [f"{prefix}{i:012x}" for i in range(count)]
