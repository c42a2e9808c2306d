"""``zserve start --broker URL --store URL`` and ``ZSERVE_STORE_MIGRATE``, through Typer's
CliRunner: the help, and the URLs and policies refused with one ``Error:`` line (no password),
the documented exit code, and no server left behind. Serving with them: e2e/test_start_urls.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zserve import registry
from zserve.cli import app

runner = CliRunner()


def zserve(*args: str, **env: str) -> Any:
    return runner.invoke(app, list(args), env=env or None)


def test_help_shows_broker_and_store() -> None:
    result = zserve("start", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # rich wraps the help
    assert "--broker" in text and "--store" in text
    assert "ZSERVE_BROKER_URL" in text and "ZSERVE_STORE_URL" in text
    assert "redis://[:password@]host:port/db" in text


def no_server_left(home: Path) -> None:
    assert registry.list_servers(str(home)) == []
    logs = home / "logs"
    assert not logs.exists() or list(logs.iterdir()) == []  # an abandoned start's log is removed


BROKER = "(ZSERVE_BROKER_URL, --broker)"


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (
            ("--broker", "foo://:secret@host"),
            2,
            f"Invalid broker URL 'foo://:***@host' {BROKER}: its scheme is not one of a broker",
        ),
        (
            ("--broker", "redis://:secret@host:port/0"),
            2,
            f"Invalid broker URL 'redis://:***@host:port/0' {BROKER}: its address or port is "
            "not valid",
        ),
        (("--store", "foo://u:secret@db/z"), 2, "The store URL 'foo://u:***@db/z' is not usable"),
        (
            ("--store", "postgresql+psycopg://u:secret@127.0.0.1:9/db"),
            3,
            "Cannot open the store at postgresql+psycopg://u:***@127.0.0.1:9/db",
        ),
    ],
)
def test_a_bad_broker_or_store_is_one_error_line_without_its_password(
    zhome: Path, detach: bool, flags: tuple[str, ...], code: int, message: str
) -> None:
    args = ["start", "-d", "weather", "--port", "0", *flags, *(["--detach"] if detach else [])]
    result = zserve(*args)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(f"Error: {message}")
    assert result.stderr.count("\n") == 1 and "secret" not in result.output
    no_server_left(zhome)


def test_a_store_file_that_does_not_exist_is_refused_not_made(zhome: Path, tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "zserve.db"
    for extra in ([], ["--detach"]):
        result = zserve("start", "-d", "weather", "--port", "0", "--store", str(missing), *extra)
        assert result.exit_code == 3, result.output
        assert result.stderr == (
            f"Error: There is no store at sqlite:///{missing}: {missing} does not exist (deploy "
            "into it first: ZSERVE_STORE_URL=URL zserve deploy SOURCE)\n"
        )
        assert not missing.parent.exists()
        no_server_left(zhome)


def test_the_broker_flag_beats_a_bad_environment_and_a_bad_policy_is_refused(
    zhome: Path,
) -> None:
    # --broker overrides ZSERVE_BROKER_URL: the bad one in the environment is never looked at,
    # and the start gets as far as the (empty) store
    result = zserve("start", "-d", "nope", "--port", "0", "--broker", "memory://",
                    ZSERVE_BROKER_URL="foo://x")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: No deployment matches 'nope'")
    bad = zserve("start", "-d", "nope", "--port", "0", ZSERVE_STORE_MIGRATE="sometimes")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("Error: Unknown store migration policy 'sometimes'")
    assert bad.stderr.count("\n") == 1
