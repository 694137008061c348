"""Rich rendering for the CLI: progress callbacks and tables. Only the CLI imports this module."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from histoeq.progress import ProgressFn, null_progress

console = Console()
err_console = Console(stderr=True)


@contextmanager
def rich_progress(transient: bool = False) -> Iterator[ProgressFn]:
    """Yield a `ProgressFn` that draws one rich bar per task name (on stderr, so stdout stays parseable).

    On a non-terminal stderr (a log file, a pipe, CI) it reports nothing: rich would write a blank line when the
    bar ends, and an error message must stay a single line."""
    if not err_console.is_terminal:
        yield null_progress
        return
    bars = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[message]}"),
        console=err_console,
        transient=transient,
    )
    tasks: dict[str, int] = {}

    def update(task: str, done: int, total: int | None = None, message: str = "") -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(task, total=total, message=message)
        bars.update(tasks[task], completed=done, total=total, message=message)

    with bars:
        yield update


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows as a rich table on stdout."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col[:1].isupper() is False else "left")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
