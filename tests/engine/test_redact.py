"""Secrets never reach a record: keys matched by word, at any depth; big values truncated."""

from __future__ import annotations

import json

import pytest

from zserve.engine.redact import REDACTED, Redactor, truncate, words


@pytest.mark.parametrize(
    "key", ["api_key", "authToken", "X-Session-Id", "PASSWORD", "userPassword2", "APIKey",
            "client.secret", "credential", "token_count"],
)  # fmt: skip
def test_secret_keys_are_redacted(key: str) -> None:
    assert Redactor().is_secret(key)


@pytest.mark.parametrize("key", ["max_tokens", "author", "keyword", "city", "tokens", "monkey"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not Redactor().is_secret(key)


def test_words_split_at_separators_and_humps() -> None:
    assert words("authToken") == ["auth", "token"]
    assert words("HTTPServerKey") == ["http", "server", "key"]
    assert words("x-session_id.v2") == ["x", "session", "id", "v", "2"]


def test_nested_values_are_redacted_in_a_copy() -> None:
    params = {
        "city": "Paris",
        "auth": {"user": "ann", "password": "p"},
        "headers": [{"X-Api-Key": "k", "accept": "json"}],
        "max_tokens": 10,
    }
    redacted = Redactor().redact(params)
    assert redacted == {
        "city": "Paris",
        "auth": REDACTED,
        "headers": [{"X-Api-Key": REDACTED, "accept": "json"}],
        "max_tokens": 10,
    }
    assert params["auth"] == {"user": "ann", "password": "p"}  # the original is untouched
    assert "p" not in json.dumps(redacted["auth"])


def test_setting_replaces_the_words() -> None:
    custom = Redactor.from_setting(" ssn , pin ")
    assert custom.is_secret("user_ssn") and custom.is_secret("PIN")
    assert not custom.is_secret("password")
    assert Redactor.from_setting("").is_secret("password")
    assert Redactor.from_setting(None).is_secret("token")


def test_truncate_keeps_small_values_and_marks_big_ones() -> None:
    assert truncate({"a": 1}, 100) == ({"a": 1}, False)
    text, cut = truncate("x" * 1000, 100)
    assert cut and text.startswith('"xxx') and "truncated: 1002 bytes, kept 100" in text
    assert len(text.encode()) < 200
    # multi-byte characters are never split into invalid text
    text, cut = truncate("é" * 100, 51)
    assert cut and "\ufffd" not in text
