"""Usage errors of the server commands, through Typer's CliRunner (no server needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
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
        (["invoke", "--jsonl"], 2,
         "Error: --jsonl prints a job's events as they come: give it with --stream"),
        (["invoke", "--stream", "--json", "--jsonl"], 2,
         "Error: Give --json (one document at the end) or --jsonl (a line per event)"),
        (["invoke", "--idempotency-key", "k"], 2,
         "Error: --idempotency-key names a background job: give it with --async"),
        (["invoke", "--stream", "--idempotency-key", "k"], 2,
         "Error: --idempotency-key names a background job: give it with --async"),
        (["stream", "abcd", "--json", "--jsonl"], 2,
         "Error: Give --json (one document at the end) or --jsonl (a line per event)"),
        (["stop"], 3, "Error: No zserve server is running"),
        (["stop", "abc", "--all"], 2, "Error: Name servers to stop, or pass --all, not both"),
        (["stop", "abc", "def"], 2, "Error: No running server matches 'abc'"),
        (["logs"], 3, "Error: No zserve server is running: start one with"),
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
        (["-p", "n=-1"], "Error: --param n (int): must be positive"),
        ([], "Error: --param n (int) is required"),
        (["-p", "n=1", "-p", "tags=a"],
         "Error: --param tags (list[str]): Input should be a valid list (list and dict values "
         "are JSON: --param tags='[\"a\",\"b\"]')"),
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
    pruned = runner.invoke(app, ["logs", "--prune"])
    assert pruned.exit_code == 0
    assert pruned.stdout == "Deleted 0 log(s) of servers not running (0 bytes freed)\n"


def _leaf_commands() -> dict[str, Any]:
    """Every command of the CLI (click's tree, as `zserve --help` builds it) by its path."""
    found: dict[str, Any] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        found[" ".join(path)] = cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_top_level_help_lists_each_command_with_a_whole_sentence() -> None:
    out = runner.invoke(app, ["--help"], terminal_width=80).stdout
    listed = out.split("Commands:\n", 1)[1].splitlines()
    summaries = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in listed if line.strip()}
    assert set(summaries) >= {"deploy", "start", "invoke", "stream", "jobs", "bench"}
    for name, summary in summaries.items():
        assert summary.endswith(".") and not summary.endswith("..."), (name, summary)
    for group in ("jobs", "runs", "deployments", "db"):
        out = runner.invoke(app, [group, "--help"], terminal_width=80).stdout
        for line in out.split("Commands:\n", 1)[1].splitlines():
            assert line.rstrip().endswith(".") and not line.rstrip().endswith("..."), line


def test_dash_n_always_means_how_many_and_name_has_no_short_form() -> None:
    meanings = {}
    for path, cmd in _leaf_commands().items():
        for param in cmd.params:
            opts = set(getattr(param, "opts", ())) | set(getattr(param, "secondary_opts", ()))
            if "-n" in opts:
                meanings[path] = param.name
            if "--name" in opts:
                assert opts == {"--name"}, (path, opts)
    assert meanings == {"jobs list": "limit", "runs list": "limit", "logs": "tail",
                        "bench": "requests"}  # fmt: skip


def test_every_placeholder_is_written_one_way() -> None:
    for path, cmd in _leaf_commands().items():
        if getattr(cmd, "commands", None):
            continue
        out = runner.invoke(app, [*path.split(), "--help"], terminal_width=200).stdout
        usage = out.splitlines()[0]
        assert "{" not in usage and "<" not in usage, usage
        for line in out.splitlines():
            assert not re.search(r"<(str|int|float|path|list\[)", line), (path, line)
    out = runner.invoke(app, ["invoke", "--help"], terminal_width=200).stdout
    assert "-p, --param NAME=VALUE " in out and "--limit" not in out
    assert "--capture [none|metadata|full|sampled|errors_only]" in out
    jobs = runner.invoke(app, ["jobs", "show", "--help"], terminal_width=200).stdout
    assert jobs.splitlines()[0].endswith("jobs show [OPTIONS] JOB_ID")
    stop = runner.invoke(app, ["stop", "--help"], terminal_width=200).stdout
    assert stop.splitlines()[0].endswith("stop [OPTIONS] [SERVER]")
