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
        (["invoke"], 2, "Error: No zserve server is running: start one with"),
        (["invoke", "--url", "http://x", "--server", "y"], 2,
         "Error: Give only one of --url, --server"),
        (["invoke", "--server", "nope"], 2, "Error: No running server matches 'nope'"),
        (["invoke", "--url", "http://127.0.0.1:9", "-p", "bad"], 3,
         "Error: No zserve server answers at http://127.0.0.1:9"),
        (["stop"], 2, "Error: No zserve server is running"),
        (["stop", "abc", "--all"], 2, "Error: Name servers to stop, or pass --all, not both"),
        (["stop", "abc", "def"], 2, "Error: No running server matches 'abc'"),
        (["logs"], 2, "Error: No zserve server is running: start one with"),
        (["logs", "nope"], 2, "Error: No running server matches 'nope'"),
        (["logs", "abc", "--prune"], 2, "Error: --prune takes no server, --follow or --tail"),
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


def test_ps_and_stop_all_with_nothing_running(zhome: Path) -> None:
    assert "No servers running" in runner.invoke(app, ["ps"]).stdout
    assert runner.invoke(app, ["ps", "--json"]).stdout.strip().endswith('"servers": []\n}')
    result = runner.invoke(app, ["stop", "--all"])
    assert result.exit_code == 0 and "No servers running." in result.stdout
    pruned = runner.invoke(app, ["logs", "--prune"])
    assert pruned.exit_code == 0
    assert pruned.stdout == "Deleted 0 log(s) of servers not running (0 bytes freed)\n"
