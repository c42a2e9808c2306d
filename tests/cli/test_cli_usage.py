"""Usage errors of the server commands, through Typer's CliRunner (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from zserve.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["invoke"], 3, "Error: No zserve server is running: start one with"),
        (["jobs", "list"], 3, "Error: No zserve server is running: start one with"),
        (["jobs", "show", "abcd"], 3, "Error: No zserve server is running: start one with"),
        (["stream", "abcd1234"], 3, "Error: No zserve server is running: start one with"),
        (["invoke", "--url", "http://x", "--server", "y"], 2,
         "Error: Give only one of --url, --server"),
        (["invoke", "--server", "nope"], 2, "Error: No running server matches 'nope'"),
        (["invoke", "--url", "http://127.0.0.1:9", "-p", "bad"], 3,
         "Error: No zserve server answers at http://127.0.0.1:9"),
        (["stop"], 2, "Error: Name one server to stop, or pass --all"),
        (["stop", "abc", "--all"], 2, "Error: Name one server to stop, or pass --all"),
        (["logs", "nope"], 2, "Error: No running server matches 'nope'"),
        (["start", "-d", "nope"], 2, "Error: No deployment matches 'nope'"),
        (["run", "nope"], 2, "Error: No deployment matches 'nope'"),
        (["run", "zserve.examples.weather:weather_pipeline", "-p", "city"], 2,
         "Error: --param 'city' is not of the form name=value"),
        (["run", "zserve.examples.weather:weather_pipeline", "-p", "city=x", "--capture",
          "full"], 2, "Error: Capture mode 'full' is not supported yet: `zserve run` records"),
    ],
)  # fmt: skip
def test_usage_errors(zhome: Path, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(message), result.stderr
    assert result.stdout == ""


CHECKED = """\
from typing import Annotated

from pydantic import AfterValidator

from zserve import pipeline, step


def _positive(n: int) -> int:
    if n <= 0:
        raise ValueError("must be positive")
    return n


@step
def double(n: int) -> int:
    return 2 * n


@pipeline
def checked(n: Annotated[int, AfterValidator(_positive)], tags: list[str] = []) -> int:
    return double(n)
"""


def test_parameter_errors_of_run_are_in_cli_terms_without_pydantic_wording(
    zhome: Path, tmp_path: Path
) -> None:
    source = tmp_path / "checked.py"
    source.write_text(CHECKED)
    for params, line in (
        (["-p", "n=-1"], "Error: --param n: must be positive"),
        ([], "Error: --param n is required"),
        (["-p", "n=1", "-p", "tags=a"],
         "Error: --param tags: Input should be a valid list"),
    ):  # fmt: skip
        result = runner.invoke(app, ["run", f"{source}:checked", *params])
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines() == [line]
        assert "Value error" not in result.stderr


def test_ps_and_stop_all_with_nothing_running(zhome: Path) -> None:
    assert "No servers running" in runner.invoke(app, ["ps"]).stdout
    assert runner.invoke(app, ["ps", "--json"]).stdout.strip().endswith('"servers": []\n}')
    result = runner.invoke(app, ["stop", "--all"])
    assert result.exit_code == 0 and "No servers running." in result.stdout
