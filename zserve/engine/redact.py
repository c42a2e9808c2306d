"""Redaction of secrets before anything is recorded, and the size cap of a recorded value.

A key is secret when one of its words is a secret word: keys are split into words at
underscores, dashes, dots, spaces and camelCase humps, and compared case-insensitively. So
``api_key``, ``authToken`` and ``X-Session-Id`` are redacted, while ``max_tokens``, ``author`` and
``keyword`` are not. Nested dicts and lists are walked; a secret key's whole value is replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["DEFAULT_SECRET_WORDS", "REDACTED", "Redactor", "truncate"]

DEFAULT_SECRET_WORDS = ("password", "token", "secret", "key", "auth", "credential", "session")
REDACTED = "[REDACTED]"

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def words(key: str) -> list[str]:
    """``authToken`` -> ``["auth", "token"]``; ``API_KEY`` -> ``["api", "key"]``."""
    return [w.lower() for w in _WORDS.findall(key)]


class Redactor:
    """Replaces the values of secret keys with ``[REDACTED]``."""

    def __init__(self, secret_words: Iterable[str] = DEFAULT_SECRET_WORDS) -> None:
        self.secret_words = frozenset(w.strip().lower() for w in secret_words if w.strip())
        self._encoded = tuple(w.encode() for w in self.secret_words)
        #: key -> secret or not: keys repeat from request to request
        self._known: dict[str, bool] = {}

    @classmethod
    def from_setting(cls, setting: str | None) -> Redactor:
        """From ``ZSERVE_REDACT``: comma-separated words; unset or empty keeps the defaults."""
        if not setting or not setting.strip():
            return cls()
        return cls(setting.split(","))

    def is_secret(self, key: str) -> bool:
        known = self._known.get(key)
        if known is None:
            known = any(w in self.secret_words for w in words(key))
            if len(self._known) < 10_000:  # bounded: keys are names, not data
                self._known[key] = known
        return known

    def may_hold_secrets(self, json_text: bytes) -> bool:
        """Whether a value whose JSON text is ``json_text`` can have a secret key at all: if no
        secret word appears anywhere in the text, no key holds one (a cheap test in C)."""
        low = json_text.lower()
        return any(w in low for w in self._encoded)

    def redact(self, value: Any) -> Any:
        """``value`` with every secret key's value replaced, at any depth (a copy; the
        original is left as it is)."""
        if isinstance(value, dict):
            return {
                k: REDACTED if isinstance(k, str) and self.is_secret(k) else self.redact(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value


def truncate(value: Any, max_bytes: int) -> tuple[Any, bool]:
    """``value`` (JSON data) as it is when its JSON form fits in ``max_bytes``; otherwise the
    start of its JSON text with a marker, and True."""
    text = json.dumps(value, default=repr, ensure_ascii=False)
    data = text.encode()
    if len(data) <= max_bytes:
        return value, False
    head = data[:max_bytes].decode(errors="ignore")
    return f"{head}... [truncated: {len(data)} bytes, kept {max_bytes}]", True
