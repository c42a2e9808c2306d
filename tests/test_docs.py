"""The README stays true: its exit-code and environment tables match the code."""

from __future__ import annotations

import re

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
    expected = {var: alias for var, alias in ENV_VARS.values()}
    assert documented == expected


def test_readme_shows_the_two_commands() -> None:
    assert "scripts/demo" in README and "scripts/test" in README
