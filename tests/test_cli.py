"""The CLI shell: usage errors (bad or missing options, unknown commands) read like every other bad input."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("args,fragment", [
    (["predict", "--batch-size", "abc", "x.svs"], "--batch-size"),
    (["predict"], "Missing argument"),
    (["train", "--data", "x"], "Missing option '--model'"),
    (["nosuch"], "No such command"),
])
def test_usage_errors_are_one_line_with_exit_code_2(capsys, args: list[str], fragment: str) -> None:
    code, _, err = run_cli(args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], err
    assert "--help" in lines[0]
