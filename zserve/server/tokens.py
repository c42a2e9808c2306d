"""Short-lived stream tokens: how a browser follows a job on a server with an auth key.

``EventSource`` and browser WebSockets cannot send an ``Authorization`` header. An authenticated
``POST /jobs/{id}/token`` (or the 202 answer of an async invoke) gives a token for that one job,
valid for ``TOKEN_TTL_S``; ``GET /stream/{id}?token=`` and ``WS /stream?token=`` (attaching to
that job) accept it instead of the header. A token is ``<expiry>.<HMAC-SHA256>`` of the job id
and expiry under a key derived from the auth key, so every worker and every host with the same
key accepts it, and nothing is stored. The auth key itself is never accepted in a URL, and
``logs.RedactTokens`` keeps tokens out of the logs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

__all__ = ["TOKEN_TTL_S", "StreamTokens"]

#: Seconds a stream token is valid.
TOKEN_TTL_S = 300


class StreamTokens:
    def __init__(self, auth_key: str, ttl_s: int = TOKEN_TTL_S) -> None:
        # a key of its own: a token never reveals anything about the auth key
        self._key = hmac.new(auth_key.encode(), b"zserve stream tokens", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def _mac(self, job_id: str, expires: int) -> str:
        digest = hmac.new(self._key, f"{job_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, job_id: str, now: float | None = None) -> tuple[str, int]:
        """A token for ``job_id`` and the unix time it expires."""
        expires = int(now if now is not None else time.time()) + self.ttl_s
        return f"{expires}.{self._mac(job_id, expires)}", expires

    def valid(self, token: str, job_id: str, now: float | None = None) -> bool:
        expires_text, _, mac = token.partition(".")
        if not expires_text.isdigit() or len(expires_text) > 12 or not mac:
            return False
        expires = int(expires_text)
        if expires < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(mac, self._mac(job_id, expires))
