"""The `histoeq` command line: a thin Typer layer.

Each area registers its commands from its own file (core, data, train, infer) so the layer stays small; every
command parses options, calls one library function and prints its result. `main()` turns `HistoeqError` into a
one-line message on stderr and exit code 2. Commands import their library code when they run, so that ``--help``
stays fast and `histoeq predict` never loads torch.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import typer  # noqa: E402

from histoeq import __version__  # noqa: E402
from histoeq.errors import HistoeqError, one_line  # noqa: E402

app = typer.Typer(
    name="histoeq",
    help="Rotation-invariant histopathology detection with group-equivariant CNNs (P4M, SE(2)).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
bench_app = typer.Typer(help="Benchmarks: layers, extraction, training, prediction.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"histoeq {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """histoeq: extract, train, eval, export, predict."""


def _register() -> None:
    # Each area file adds its commands to `app` / `bench_app` on import.
    import importlib

    for name in ("core", "data", "train", "infer"):
        try:
            importlib.import_module(f"histoeq.cli.{name}")
        except ModuleNotFoundError as exc:  # an area not built yet
            if exc.name != f"histoeq.cli.{name}":
                raise


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input or usage, 1 unexpected failure)."""
    try:
        result = app(args=argv, prog_name="histoeq", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except HistoeqError as exc:  # one line even when a library's message (pandas, OS) carries a newline
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except typer.TyperException as exc:  # usage errors: bad or missing options (typer vendors click)
        # One line like every other bad input, pointing to the command's --help instead of printing the usage block.
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print(f"error: {one_line(message)}{hint}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
