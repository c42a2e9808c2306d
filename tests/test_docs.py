"""The README stays true: its exit-code and environment tables match the code."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import ROOT
from zserve.errors import EXIT_CODES
from zserve.settings import ENV_VARS

README = (ROOT / "README.md").read_text()


def table_after(heading: str) -> list[list[str]]:
    section = README.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break  # the first table after the heading has ended
    return rows[2:]  # header and separator


def test_exit_code_table_matches_errors_module() -> None:
    rows = table_after("### Exit codes")
    assert {int(code): meaning for code, meaning in rows} == EXIT_CODES


def test_environment_table_lists_every_setting_and_alias() -> None:
    rows = table_after("## Configuration")
    documented = {re.sub(r"`", "", r[0]): re.sub(r"`", "", r[1]) or None for r in rows}
    expected = {var: ", ".join(aliases) or None for var, aliases in ENV_VARS.values()}
    assert documented == expected


def test_readme_shows_the_two_commands() -> None:
    assert "scripts/demo" in README and "scripts/test" in README


def reference_rows() -> dict[str, set[str]]:
    """README command reference: command path -> the options its row names."""
    rows = {}
    for cells in table_after("## Command reference"):
        usage = cells[0].strip("`")
        words = usage.split()[1:]  # drop "zserve"
        path = []
        for word in words:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", word):  # `export k8s`
                break
            path.append(word)
        rows[" ".join(path)] = set(re.findall(r"--[a-z][a-z0-9-]*", usage))
    return rows


def cli_commands() -> dict[str, set[str]]:
    """Every leaf command of the CLI -> its options (as `--help` shows them)."""
    import typer

    from zserve.cli import app

    root = typer.main.get_command(app)
    found: dict[str, set[str]] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        subcommands = getattr(cmd, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
            return
        options = {o for p in cmd.params for o in p.opts if o.startswith("--")}
        found[" ".join(path)] = options - {"--help"}

    walk(root, [])
    return found


def test_command_reference_matches_the_cli() -> None:
    documented = reference_rows()
    actual = cli_commands()
    documented.pop("", None)  # the `zserve --version` row
    assert sorted(documented) == sorted(actual), "README command reference vs the CLI"
    for command, options in actual.items():
        assert documented[command] == options, f"options of `zserve {command}`"


def test_every_command_has_help() -> None:
    from typer.testing import CliRunner

    from zserve.cli import app

    for command, options in cli_commands().items():
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, command
        for option in options:
            assert option in result.stdout, f"{option} missing from `zserve {command} --help`"


def test_the_pipeline_snippet_is_the_bundled_example() -> None:
    section = README.split("## A pipeline", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```\n", 1)[0]
    assert snippet == (ROOT / "zserve" / "examples" / "weather.py").read_text()
