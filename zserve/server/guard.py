"""What a browser may do with a server: the names it answers to, the pages that may use it.

A server on a developer's laptop has no auth key, yet every web page the developer opens can send
it requests. Three checks keep those pages out, and ``ZSERVE_CORS_ORIGINS`` lets chosen ones in:

- **Host** (DNS rebinding: a page of ``evil.example`` whose name resolves to 127.0.0.1). A request
  must name the server by an address it listens on, a loopback name, or a name of
  ``ZSERVE_ALLOWED_HOSTS`` (``.example.com`` takes the domain and its subdomains, ``*`` any);
  else 400. The probes (``/health``, ``/livez``, ``/readyz``) are exempt: kubelets and load
  balancers send names of their own.
- **Origin** of a WebSocket handshake: a browser page may open ``/stream`` only from the
  server's own origin or an origin of ``ZSERVE_CORS_ORIGINS`` (else 403 before the handshake).
  Clients that are not browsers send no ``Origin`` and are not concerned.
- **Content type**: ``POST /invoke`` takes ``application/json`` only (``Service.parse``), which a
  page on another origin cannot send without a CORS preflight, that only allowed origins pass.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import psutil
from starlette.types import ASGIApp, Receive, Scope, Send

from zserve.errors import ForbiddenOrigin, UntrustedHost
from zserve.server.problems import close_reason, problem_from_error

__all__ = ["HostGuard", "allowed_hosts", "host_of", "is_json", "split_list"]

#: Paths any Host may ask for.
EXEMPT_PATHS = frozenset({"/health", "/livez", "/readyz"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "localhost.localdomain"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
#: Distinct Host values whose verdict is remembered (a flood of new names cannot grow it more).
_MEMO_MAX = 1024


def split_list(text: str | None) -> list[str]:
    """A comma- or space-separated setting as its items."""
    return [item for item in (text or "").replace(",", " ").split() if item]


def host_of(value: str) -> str:
    """The name in a Host header or an origin's netloc, without port, brackets or a final dot,
    in lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _local_addresses() -> set[str]:
    """Every address of this machine's interfaces, and its host name."""
    found = {socket.gethostname().lower()}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.add(address.address.partition("%")[0].lower())
    return found


def allowed_hosts(bind: str, configured: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """(names, domain suffixes) a server bound to ``bind`` answers to; ``("*",)`` as suffixes
    means any name."""
    names = set(LOOPBACK_NAMES)
    suffixes: list[str] = []
    bind = host_of(bind)
    if bind in WILDCARD_BINDS:
        names |= _local_addresses()
    else:
        names.add(bind)
    for item in configured:
        item = item.strip().lower()
        if item == "*":
            suffixes = ["*"]
        elif item.startswith("."):
            suffixes.append(item.rstrip("."))
        elif item:
            names.add(host_of(item))
    return frozenset(names), tuple(suffixes)


class HostGuard:
    """Pure ASGI middleware: the Host check of every request (not ``EXEMPT_PATHS``) and the
    Origin check of WebSocket handshakes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        bind: str,
        allowed: Iterable[str] = (),
        origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.names, self.suffixes = allowed_hosts(bind, allowed)
        self.any_host = "*" in self.suffixes
        origins = [origin.rstrip("/").lower() for origin in origins]
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        self._memo: dict[bytes, bool] = {}

    def allows(self, host: bytes) -> bool:
        found = self._memo.get(host)
        if found is None:
            name = host_of(host.decode("latin-1"))
            found = self.any_host or name in self.names or _under(name, self.suffixes)
            if not found:
                found = _is_loopback(name)
            if len(self._memo) < _MEMO_MAX:
                self._memo[host] = found
        return found

    def passes(self, host: bytes | None) -> bool:
        """An HTTP request naming ``host`` passes the Host check."""
        return host is None or self.any_host or self.allows(host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        if host is not None and not self.passes(host):
            shown = host.decode("latin-1")[:100]
            error: UntrustedHost | ForbiddenOrigin = UntrustedHost(
                f"The Host {shown!r} is not a name this server answers to (a guard against DNS "
                f"rebinding): call it by its address, or add {host_of(shown)!r} to "
                "ZSERVE_ALLOWED_HOSTS"
            )
        elif kind == "websocket" and origin is not None and not self.origin_allowed(origin, host):
            shown = origin.decode("latin-1")[:100]
            error = ForbiddenOrigin(
                f"WebSocket handshakes from pages of {shown!r} are refused: add that origin to "
                "ZSERVE_CORS_ORIGINS to let its pages use this server"
            )
        else:
            await self.app(scope, receive, send)
            return
        if kind == "websocket":  # refused before the handshake: the client sees HTTP 403
            await send(
                {"type": "websocket.close", "code": 1008, "reason": close_reason(str(error))}
            )
            return
        await problem_from_error(error)(scope, receive, send)

    def origin_allowed(self, origin: bytes, host: bytes | None) -> bool:
        """Same origin as the page's server, or one of ``ZSERVE_CORS_ORIGINS``."""
        text = origin.decode("latin-1").rstrip("/").lower()
        if self.any_origin or text in self.origins:
            return True
        if host is None:
            return False
        netloc = urlsplit(text).netloc
        return bool(netloc) and netloc == host.decode("latin-1").lower()


def is_json(scope: Scope) -> bool:
    """The request's body is declared JSON: ``application/json`` or ``application/*+json``."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.partition(b";")[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return False


def _under(name: str, suffixes: tuple[str, ...]) -> bool:
    return any(name == suffix[1:] or name.endswith(suffix) for suffix in suffixes)


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
