"""The `histoeq` command line: a thin Typer layer.

Each area registers its commands from its own file (core, data, train, infer) so the layer stays small; every
command parses options, calls one library function and prints its result. `main()` turns `HistoeqError` into a
one-line message on stderr and exit code 2. Commands import their library code when they run, so that ``--help``
stays fast and `histoeq predict` never loads torch.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import typer  # noqa: E402

from histoeq import __version__  # noqa: E402
from histoeq.errors import HistoeqError, InputWarning, one_line  # noqa: E402

app = typer.Typer(
    name="histoeq",
    help="Rotation-invariant histopathology detection with group-equivariant CNNs (P4M, SE(2)).\n\n"
    "Progress: bars on a terminal; elsewhere (SLURM, nohup, a pipe) one plain line per step on stdout.",
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    log_json: Path | None = typer.Option(
        None, "--log-json", metavar="FILE", help="Append progress and milestones (epochs, ...) to FILE as JSON lines."),
) -> None:
    """histoeq: extract, train, eval, export, predict."""
    from histoeq.cli._render import configure

    configure(quiet=quiet, log_json=log_json, argv=sys.argv[1:] if _ARGV is None else _ARGV)


# Options renamed so that one name has one meaning across commands: (command or "*", old) -> new. An old name is
# refused with a one-line hint rather than kept as an alias, so scripts and docs converge on the new names.
RENAMED = {
    ("*", "--force"): "--overwrite",
    ("*", "--num-workers"): "--workers",
    ("*", "--tissue-threshold"): "--min-tissue",
    ("*", "--tta"): "--invariant-to",
    ("predict", "--mpp"): "--slide-mpp",
    ("bench predict", "--mpp"): "--slide-mpp",
}
GLOBAL_OPTIONS = ("--quiet", "-q", "--log-json")
OVERWRITE_HELP = "Replace existing outputs at --out (refused without)."


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """The overwrite policy of commands whose outputs cannot be resumed: an existing output is an error unless
    --overwrite is given (checked before any work, so nothing is half-replaced)."""
    from histoeq.errors import InputError

    for path in paths:
        if path.is_file() and not overwrite:  # a folder in the way is the command's own error
            raise InputError(path, "already exists (pass --overwrite to replace it, or choose another --out)")


_ARGV: list[str] | None = None  # the arguments of the running `main` call, for the --log-json start event


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
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    from histoeq.cli._render import close_log

    try:
        code, error = _run(argv)
    except BaseException:  # an unexpected failure keeps its traceback; the log still gets its end event
        close_log(exit_code=1, error="unexpected failure (traceback on stderr)")
        raise
    if error is not None:
        print(error, file=sys.stderr)
    close_log(exit_code=code, error=error)
    return code


def _run(argv: list[str] | None) -> tuple[int, str | None]:
    """(exit code, the one-line message for stderr or None)."""
    with warnings.catch_warnings():  # restores the warning filters and showwarning afterwards
        warnings.simplefilter("always", InputWarning)  # one per slide, even when two slides warn alike
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
            if issubclass(category, InputWarning):
                _print_warning(str(message))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return _run_app(argv)


def _print_warning(text: str) -> None:
    """An `InputWarning` as one ``warning:`` line on stderr (above any progress bars; not under --quiet), and as a
    ``warning`` event in the --log-json file."""
    from histoeq.cli._render import err_console, settings
    from histoeq.progress import StepLog

    line = f"warning: {one_line(text)}"
    if not settings.quiet:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    if settings.log is not None:
        StepLog(json_lines=settings.log).event("warning", message=one_line(text))


def _run_app(argv: list[str] | None) -> tuple[int, str | None]:
    try:
        result = app(args=argv, prog_name="histoeq", standalone_mode=False)
        return (result if isinstance(result, int) else 0), None
    except HistoeqError as exc:  # one line even when a library's message (pandas, OS) carries a newline
        return exc.exit_code, f"error: {one_line(str(exc))}"
    except typer.Exit as exc:
        return exc.exit_code, None
    except typer.Abort:
        return 1, "aborted"
    except typer.TyperException as exc:  # usage errors: bad or missing options (typer vendors click)
        # One line like every other bad input, pointing to the command's --help instead of printing the usage block.
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return getattr(exc, "exit_code", 2), f"error: {_usage_message(exc, ctx) or one_line(message)}{hint}"
    except KeyboardInterrupt:
        return 130, "interrupted"


def _usage_message(exc: Exception, ctx: object) -> str | None:
    """The hint for an option that was renamed or that belongs before the command, else None."""
    option = getattr(exc, "option_name", None)
    if option is None or ctx is None:
        return None
    command = " ".join(getattr(ctx, "command_path", "").split()[1:])
    new = RENAMED.get((command, option)) or RENAMED.get(("*", option))
    if new is not None:
        return f"{option} is now {new}"
    if option in GLOBAL_OPTIONS:
        usage = f"{option} FILE" if option == "--log-json" else option
        return f"{option} is a global option: put it before the command (histoeq {usage} {command} ...)"
    return None
