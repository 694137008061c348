"""Every example in every command's --help, and every histoeq command line in the README and docs/usage.md, parses
with the current CLI (so a renamed option or a typo fails here), and no example is wrapped at 80 columns."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from histoeq.cli import app
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def _root() -> typer.core.TyperGroup:
    return typer.main.get_command(app)


def _command_paths(group: typer.core.TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, typer.core.TyperGroup):
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def parse(args: list[str]) -> None:
    """Parse `histoeq ARGS` down to the command without running it: types, choices, required options and values."""
    ctx = _root().make_context("histoeq", list(args))
    while isinstance(ctx.command, typer.core.TyperGroup):
        # A group's parse leaves the subcommand name in _protected_args (click's own invoke reads it the same way).
        rest = [*ctx._protected_args, *ctx.args]
        name, command, rest = ctx.command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)


def _command_line(lines: list[str]) -> list[str]:
    """Tokens after `histoeq` of one shell command (continuation backslashes joined; `torchrun ... -m histoeq`)."""
    tokens = shlex.split(" ".join(line.rstrip().removesuffix("\\") for line in lines))
    start = tokens.index("histoeq")
    return tokens[start + 1:]


def help_examples(text: str) -> list[list[str]]:
    """The commands of the Examples section of rendered --help text; a line that is neither a comment, a command
    start nor the continuation of a line ending in a backslash (a wrapped line) fails the test."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() in ("Examples", "Example")]
    if not starts:
        return []
    commands, current = [], []
    for line in lines[starts[0] + 1:]:
        stripped = line.strip()
        if current:
            current.append(stripped)
        elif not stripped or stripped.startswith("#"):
            continue
        elif stripped.startswith(("histoeq ", "torchrun ")):
            current = [stripped]
        else:
            raise AssertionError(f"example line is not a command (wrapped?): {line!r}")
        if not stripped.endswith("\\"):
            commands.append(_command_line(current))
            current = []
    assert not current, f"example ends in a continuation: {current}"
    return commands


COMMANDS = _command_paths(_root())


def test_every_command_is_listed() -> None:
    assert {("train",), ("predict",), ("doctor",), ("bench", "predict")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_examples_parse(path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli([*path, "--help"], capsys)
    assert code == 0, err
    for args in help_examples(out):
        assert tuple(args[:len(path)]) == path or args[0].startswith("-"), args  # global options come first
        parse(args)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_shows_every_default(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """Defaults written in square brackets inside a help string are eaten by rich markup (an empty " ." remains)."""
    code, out, _ = run_cli([*path, "--help"], capsys)
    assert code == 0 and not re.search(r"\s\.(\s|$)", out.replace("...", "")), out
    command = _root()
    for name in path:
        command = command.commands[name]
    for param in command.params:
        assert "[default" not in (getattr(param, "help", None) or ""), param.name


def _doc_command_lines(path: Path) -> list[str]:
    """`histoeq ...` lines (continuations joined) of the code blocks of a Markdown file, synopses included."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    commands = []
    for block in blocks:
        current: list[str] = []
        for line in block.splitlines():
            stripped = line.strip()
            if not current and not re.match(r"(\S+=\S+ )*(histoeq|torchrun) ", stripped):
                continue
            current.append(stripped.removesuffix("\\"))
            if not stripped.endswith("\\"):
                commands.append(" ".join(current).split("  #")[0])
                current = []
    return commands


@pytest.mark.parametrize("doc", ["README.md", "docs/usage.md"])
def test_documented_command_lines_parse(doc: str) -> None:
    """Concrete command lines parse; synopses (with [optional] parts, a|b choices, …) use no renamed option."""
    from histoeq.cli import RENAMED

    lines = _doc_command_lines(REPO / doc)
    assert lines, f"no histoeq command lines found in {doc}"
    for line in lines:
        args = _command_line([line])
        command = " ".join(a for a in args[:2] if not a.startswith("-") and a in {*app_commands()})
        for (where, old), new in RENAMED.items():
            if where in ("*", command) or command.startswith(where + " "):
                assert old not in [a.strip("[]") for a in args], f"{doc}: {line}: {old} is now {new}"
        if re.search(r"[\[|…<]", line) or args[-1:] == ["--help"]:
            continue
        try:
            parse(args)
        except Exception as exc:  # noqa: BLE001 - the message names the command that fails
            raise AssertionError(f"{doc}: {line}: {exc}") from None


def app_commands() -> set[str]:
    return {part for path in COMMANDS for part in path}
