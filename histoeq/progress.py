"""Progress reporting without printing.

Long steps (extraction, training, prediction) take a `ProgressFn` and call it as
``progress(task, done, total, message)``; ``total`` is None when unknown and ``message`` carries short live
figures (loss, AUC, tiles/s). Milestones with figures worth keeping (an epoch's loss and validation AUC) go through
`emit(progress, name, **fields)`, which reaches reporters that have an ``event`` method and is ignored by plain
callbacks, so any ``(task, done, total, message)`` function stays a valid reporter.

`StepLog` turns both into plain text lines and/or JSON lines for logs (batch jobs, pipes); the CLI draws rich bars
on a terminal instead.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, Protocol


class ProgressFn(Protocol):
    def __call__(self, task: str, done: int, total: int | None = None, message: str = "") -> None: ...


def null_progress(task: str, done: int, total: int | None = None, message: str = "") -> None:
    """The default callback: report nothing."""


def emit(progress: ProgressFn, name: str, **fields: Any) -> None:
    """Report the milestone `name` with JSON-able `fields` to `progress` if it takes events."""
    handler = getattr(progress, "event", None)
    if handler is not None:
        handler(name, **fields)


def fan_out(*reporters: ProgressFn) -> ProgressFn:
    """One reporter that forwards every call and event to each of `reporters`."""
    return _FanOut(reporters)


@dataclass
class _FanOut:
    reporters: tuple[ProgressFn, ...]

    def __call__(self, task: str, done: int, total: int | None = None, message: str = "") -> None:
        for report in self.reporters:
            report(task, done, total, message)

    def event(self, name: str, **fields: Any) -> None:
        for report in self.reporters:
            emit(report, name, **fields)


# A task with at most this many steps reports each one (views, slides, cells: each is a unit a log reader wants);
# longer ones (tiles, optimizer steps) report when `interval` seconds have passed, and when they finish.
COARSE_STEPS = 100


@dataclass
class _Task:
    start: float
    last: float = -math.inf
    last_done: int = -1


@dataclass
class StepLog:
    """Progress as one line per step: readable text on `text`, JSON objects on `json_lines` (either may be None).

    Text: ``HH:MM:SS task done/total (pct) message, elapsed 1m02s, ETA 2m25s``; events: see `_event_text`.
    JSON: ``{"event": "progress", "task", "done", "total", "message", "elapsed_s", "eta_s", "time"}`` and
    ``{"event": name, **fields, "time"}``. Every line is flushed at once, so logs follow a running job.
    """

    text: IO[str] | None = None
    json_lines: IO[str] | None = None
    interval: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _tasks: dict[str, _Task] = field(default_factory=dict)

    def __call__(self, task: str, done: int, total: int | None = None, message: str = "") -> None:
        now = self.clock()
        state = self._tasks.get(task)
        if state is None or done < state.last_done:  # a task name seen again from the start (next sweep cell)
            state = self._tasks[task] = _Task(start=now)
        finished = total is not None and done >= total
        coarse = total is not None and total <= COARSE_STEPS
        if done == state.last_done or not (finished or coarse or now - state.last >= self.interval):
            return
        state.last, state.last_done = now, done
        elapsed = now - state.start
        known = total is not None and 0 < done <= total and elapsed > 0
        eta = elapsed * (total - done) / done if known and total is not None else None
        if self.text is not None:
            count = f"{done}/{total} ({100 * done / total:.0f}%)" if total else str(done)
            figures = [f"elapsed {_duration(elapsed)}"] + ([f"ETA {_duration(eta)}"] if eta and not finished else [])
            self._write_text(" ".join(p for p in (task, count, message) if p) + ", " + ", ".join(figures))
        self._write_json({"event": "progress", "task": task, "done": done, "total": total, "message": message,
                          "elapsed_s": round(elapsed, 3), "eta_s": None if eta is None else round(eta, 3)})

    def event(self, name: str, **fields: Any) -> None:
        if self.text is not None:
            self._write_text(_event_text(name, fields))
        self._write_json({"event": name, **fields})

    def _write_text(self, line: str) -> None:
        assert self.text is not None
        self.text.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        self.text.flush()

    def _write_json(self, record: dict[str, Any]) -> None:
        if self.json_lines is None:
            return
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        record["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.json_lines.write(json.dumps(record, default=_jsonable) + "\n")
        self.json_lines.flush()


def _jsonable(value: Any) -> Any:
    """numpy scalars, paths and the like as plain JSON values."""
    return value.item() if hasattr(value, "item") else str(value)


def _event_text(name: str, fields: dict[str, Any]) -> str:
    """``epoch 3/20: train loss 0.41, val auc 0.91, eta 2m10s``: a field with a plural partner (epoch, epochs)
    becomes a count, ``*_s`` fields durations."""
    head, rest = name, []
    for key, value in fields.items():
        if value is None or key.endswith("s") and key[:-1] in fields:
            continue
        if key == name and f"{key}s" in fields:
            head = f"{name} {value}/{fields[key + 's']}"
        else:
            rest.append(f"{key.removesuffix('_s').replace('_', ' ')} {_figure(key, value)}")
    return head + (": " + ", ".join(rest) if rest else "")


def _figure(key: str, value: Any) -> str:
    if key.endswith("_s") and isinstance(value, (int, float)):
        return _duration(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
