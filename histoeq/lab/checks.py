"""Option checks shared by the benchmarks: a bad number is a one-line error naming the CLI option."""

from __future__ import annotations

import math

from histoeq.errors import HistoeqError


def check_int(option: str, value: object, minimum: int = 1) -> int:
    """``value`` as a whole number >= ``minimum``, else a one-line error naming the CLI ``option``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise HistoeqError(f"{option} must be a whole number of at least {minimum}, got {value!r}")
    return value


def check_finite(option: str, value: object) -> float:
    """``value`` as a finite float, else a one-line error naming the CLI ``option``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise HistoeqError(f"{option} must be a finite number, got {value!r}")
    return number
