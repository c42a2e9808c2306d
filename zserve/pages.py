"""Listings newest first, a page at a time: the cursor a page ends with, and reading it back.

A cursor is the (time, id) of the last item given, opaque to clients (URL-safe base64 of JSON);
the next page holds what is strictly older. ``/jobs`` and ``/runs`` use it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

from zserve.errors import UsageError

__all__ = ["MAX_PAGE", "cursor_of", "position_of"]

#: The most items one page may hold.
MAX_PAGE = 500


def cursor_of(ts: float, key: str) -> str:
    """The cursor of the item at (``ts``, ``key``)."""
    doc = json.dumps([ts, key]).encode()
    return base64.urlsafe_b64encode(doc).decode().rstrip("=")


def position_of(cursor: str) -> tuple[float, str]:
    """(time, id) of a cursor; UsageError if it is not one ``cursor_of`` made."""
    try:
        ts, key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise ValueError(ts)
        if not isinstance(key, str):
            raise ValueError(key)
    except (ValueError, TypeError, binascii.Error):
        raise UsageError(
            f"Invalid cursor {cursor[:80]!r}: pass the 'next' value of a previous listing"
        ) from None
    return float(ts), key
