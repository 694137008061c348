"""Output of the CLI: progress (rich bars, plain lines, JSON lines), tables, and the global --quiet / --log-json.

Only the CLI imports this module. Where progress goes:

* a terminal on both stdout and stderr: rich bars on stderr (milestones such as epochs printed above them);
* otherwise (SLURM, nohup, ``| tee``, CI): one plain line per step on stdout, flushed at once, so a log follows
  the job; errors stay a single line on stderr;
* ``--quiet``: nothing but errors;
* ``--log-json FILE``: in addition, every step and milestone as a JSON line appended to FILE.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from histoeq.progress import ProgressFn, StepLog, fan_out, null_progress

console = Console()
err_console = Console(stderr=True)

# Width of tables written to a file or pipe: wide enough that no column is cut or wrapped (rich assumes 80).
PIPE_WIDTH = 10_000


@dataclass
class _Settings:
    quiet: bool = False
    log: IO[str] | None = None


settings = _Settings()


def configure(quiet: bool = False, log_json: Path | None = None, argv: Sequence[str] = ()) -> None:
    """Apply the global options for this invocation (called by the root command before any subcommand)."""
    from histoeq.errors import InputError

    close_log()
    settings.quiet = quiet
    console.quiet = quiet
    console.width = None if console.is_terminal or os.environ.get("COLUMNS") else PIPE_WIDTH  # type: ignore[assignment]
    if log_json is not None and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 logs, as it prints
        try:
            settings.log = open(log_json, "a", encoding="utf-8")  # noqa: SIM115 - closed by close_log
        except OSError as exc:
            raise InputError(log_json, f"cannot write the --log-json file ({exc.strerror})") from None
        StepLog(json_lines=settings.log).event("start", argv=list(argv))


def close_log(exit_code: int | None = None, error: str | None = None) -> None:
    """Write the closing event (when the outcome is known) and close the --log-json file."""
    if settings.log is None:
        return
    if exit_code is not None:
        StepLog(json_lines=settings.log).event("end", exit_code=exit_code, error=error)
    settings.log.close()
    settings.log = None


def _interactive() -> bool:
    return console.is_terminal and err_console.is_terminal


@contextmanager
def rich_progress(transient: bool = False) -> Iterator[ProgressFn]:
    """Yield the `ProgressFn` for this invocation (see the module docstring for where it reports)."""
    if settings.quiet or not _interactive():
        text = None if settings.quiet else sys.stdout
        yield null_progress if text is None and settings.log is None else StepLog(text=text, json_lines=settings.log)
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
    with bars:
        reporter = _Bars(bars)
        yield reporter if settings.log is None else fan_out(reporter, StepLog(json_lines=settings.log))


class _Bars:
    """One rich bar per task name; milestones are printed as plain lines above the bars."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[str, Any] = {}

    def __call__(self, task: str, done: int, total: int | None = None, message: str = "") -> None:
        if task not in self.tasks:
            self.tasks[task] = self.bars.add_task(task, total=total, message=message)
        self.bars.update(self.tasks[task], completed=done, total=total, message=message)

    def event(self, name: str, **fields: Any) -> None:
        StepLog(text=_ConsoleText(self.bars.console)).event(name, **fields)


class _ConsoleText:
    """A text stream that prints through a rich console (so lines appear above live bars), markup off."""

    def __init__(self, target: Console) -> None:
        self.target = target

    def write(self, text: str) -> None:
        self.target.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)

    def flush(self) -> None:
        pass


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print rows as a rich table on stdout."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col[:1].isupper() is False else "left")
    for row in rows:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
