"""``Idempotency-Key`` on the requests that start a broker job (``POST /invoke?mode=async``, an
invoke body sent on ``WS /stream``): the key a client sends, checked, with a fingerprint of its
request, so that a retry of the same request returns the first job (``jobs.once``) and the same key
with another request is refused. Sync invokes check the key's form (as ``/openapi.json`` states
it) and otherwise ignore it: they never touch the broker."""

from __future__ import annotations

import hashlib
import json
import re

from zserve.broker.base import IdempotencyKey
from zserve.errors import UsageError

__all__ = ["HEADER", "MAX_KEY", "REPLAYED", "fingerprinted", "key_in"]

HEADER = "Idempotency-Key"
#: The answer that gives an earlier job under the same key says so in this header ("true").
REPLAYED = "Idempotent-Replayed"
MAX_KEY = 255
_NAME = HEADER.lower().encode()
#: 1 to MAX_KEY printable ASCII characters (spaces inside included; HTTP drops those around).
_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY}}}")


def key_in(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The request's idempotency key (its ASGI headers' first ``Idempotency-Key``), or None.
    A key given as a quoted string (``"abc"``, the form of the IETF draft) is ``abc``."""
    for name, value in headers:
        if name == _NAME:
            return _checked(value.decode("latin-1").strip())
    return None


def _checked(key: str) -> str:
    if len(key) > 2 and key[0] == key[-1] == '"':
        key = key[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not _KEY.fullmatch(key):
        raise UsageError(
            f"{HEADER} must be 1 to {MAX_KEY} printable ASCII characters (got "
            f"{len(key)} character(s){'' if key.isascii() else ', not all ASCII'}): send one "
            "key per request, such as a UUID, and the same key when you retry that request"
        )
    return key


def fingerprinted(key: str | None, mode: str, body: bytes | str) -> IdempotencyKey | None:
    """``key`` with the fingerprint of what the request asks: its ``mode`` and its JSON body
    (key order and spacing aside); None without a key."""
    if key is None:
        return None
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):  # parsed already: only for a body another way
        request = body if isinstance(body, str) else body.decode("utf-8", "replace")
    canonical = json.dumps([mode, request], sort_keys=True, separators=(",", ":"))
    return IdempotencyKey(key, hashlib.sha256(canonical.encode()).hexdigest())
