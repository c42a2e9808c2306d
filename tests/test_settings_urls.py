"""The broker and store settings: a broker URL checked when settings are resolved (one error
line, its password hidden), ``ZSERVE_STORE_MIGRATE``, and URLs shown without their password."""

from __future__ import annotations

from pathlib import Path

import pytest

from zserve.errors import UsageError
from zserve.settings import Settings, hide_password, store_url_of


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "sqlite:///tmp/broker.db",
        "redis://localhost:6379/0",
        "redis://:secret@10.0.0.5:6379/2?prefix=team-a:",
        "rediss://user:secret@redis.example:6380",
        "redis://redis",
    ],
)
def test_broker_urls_of_every_broker_pass(url: str) -> None:
    assert Settings.from_env({"ZSERVE_BROKER_URL": url}, home="/h").broker_url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("foo://:secret@host", "its scheme is not one of a broker"),
        ("localhost:6379", "its scheme is not one of a broker"),
        ("redis://:secret@host:63x9/0", "its address or port is not valid"),
        ("redis://:secret@host:70000/0", "its address or port is not valid"),
        ("redis://:secret@host/zero", "its database (the path) is not a number"),
        ("redis:secret@host", "it has no address"),
    ],
)
def test_a_bad_broker_url_is_one_usage_error_without_its_password(url: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        Settings.from_env({}, broker_url=url, home="/h")
    message = str(caught.value)
    assert message.startswith(f"Invalid broker URL {hide_password(url)!r} (ZSERVE_BROKER_URL, ")
    assert problem in message and "\n" not in message
    assert "secret" not in message
    assert caught.value.exit_code == 2


def test_store_migrate_is_auto_by_default_and_never_when_set() -> None:
    assert Settings.from_env({}, home="/h").store_migrate == "auto"
    assert Settings.from_env({"ZSERVE_STORE_MIGRATE": " Never "}, home="/h").store_migrate == (
        "never"
    )
    with pytest.raises(UsageError, match=r"Unknown store migration policy 'sometimes' \(ZSERVE_"):
        Settings.from_env({"ZSERVE_STORE_MIGRATE": "sometimes"}, home="/h")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:pw@db/z", "postgresql+psycopg://u:***@db/z"),
        ("redis://:pw@r:6379/0?prefix=a:", "redis://:***@r:6379/0?prefix=a:"),
        ("redis://r:6379/0?password=pw&prefix=a:", "redis://r:6379/0?password=***&prefix=a:"),
        ("postgresql://u@db/z?sslmode=require&PASSWORD=pw", "postgresql://u@db/z?sslmode=require&PASSWORD=***"),
        ("redis:secret@host", "redis:***@host"),  # not a URL: all before the @ is hidden
        ("memory://", "memory://"),
        ("sqlite:////srv/zserve.db", "sqlite:////srv/zserve.db"),
    ],
)  # fmt: skip
def test_hide_password(url: str, shown: str) -> None:
    assert hide_password(url) == shown


def test_public_settings_hide_the_broker_password_too() -> None:
    s = Settings.from_env({}, broker_url="redis://:pw@r:6379/0", home="/h")
    assert s.public()["broker_url"] == "redis://:***@r:6379/0"


def test_a_store_is_a_url_or_a_sqlite_files_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert store_url_of("postgresql://u:pw@db/z") == "postgresql://u:pw@db/z"
    assert store_url_of("other.db") == f"sqlite:///{tmp_path}/other.db"
