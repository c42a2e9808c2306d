"""The front of ``POST /invoke`` (zserve/server/front.py) answers as the whole middleware stack
does: every request is sent, as raw ASGI, both to the app (front first) and to the stack alone,
and the two answers must be the same but for fresh ids and timings."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import local_app
from tests.server.test_http import WEATHER
from zserve.server.front import _FULL, _GZIP, _PLAIN, InvokeFront
from zserve.server.guard import HostGuard
from zserve.settings import Settings

pytestmark = pytest.mark.anyio

KEY = "front-test-key"
ORIGIN = "https://app.example"
LIMIT = 4096
#: Fields of an answer that differ from one request to the next.
VOLATILE = {"job_id", "execution_time_ms", "location", "links", "x-request-id", "retry-after"}


def body_of(city: str = "Paris") -> bytes:
    return json.dumps({"parameters": {"city": city}}).encode()


def head(body: bytes | None = None, *extra: tuple[str, str], length: bool = True) -> list[Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
    if length and body is not None:
        headers.append((b"content-length", str(len(body)).encode()))
    return headers + [(k.encode(), v.encode()) for k, v in extra]


async def call(
    asgi: Any, headers: list[Any], body: bytes, query: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/invoke", "raw_path": b"/invoke", "query_string": query,
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": headers, "state": {},
    }  # fmt: skip
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(asgi(scope, receive, send), 10)
    start, content = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    answer = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    if answer.get("content-encoding") == "gzip":
        content = gzip.decompress(content)
    doc = json.loads(content) if content else None
    return start["status"], answer, doc


def same(a: tuple[int, dict[str, str], Any], b: tuple[int, dict[str, str], Any]) -> None:
    def steady(answer: tuple[int, dict[str, str], Any]) -> Any:
        status, headers, doc = answer
        if isinstance(doc, dict):
            doc = {k: v for k, v in doc.items() if k not in VOLATILE}
        kept = {k: v for k, v in headers.items() if k not in VOLATILE and k != "content-length"}
        return status, kept, sorted(k for k in headers if k in VOLATILE), doc

    assert steady(a) == steady(b)


@pytest.fixture
async def apps(zhome: Any) -> AsyncIterator[dict[str, Any]]:
    """An open app, one with CORS for ORIGIN and one with an auth key, their lifespans running."""
    built = {
        "open": local_app(WEATHER, Settings(home=str(zhome), max_body_bytes=LIMIT)),
        "cors": local_app(WEATHER, Settings(home=str(zhome), cors_origins=ORIGIN)),
        "locked": local_app(WEATHER, Settings(home=str(zhome), auth_key=KEY)),
    }
    async with contextlib.AsyncExitStack() as stack:
        for app in built.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield built


BIG = body_of("x" * 2000)  # an answer over the gzip threshold (1 KiB)
CASES: dict[str, tuple[str, list[Any], bytes, bytes, int]] = {
    # name: (app, headers, body, query, what the front does with it)
    "plain": ("open", head(body_of()), body_of(), b"", _PLAIN),
    "cors on, no origin": ("cors", head(body_of()), body_of(), b"", _FULL),
    "client request id": ("open", head(body_of(), ("x-request-id", "abc-123")), body_of(), b"",
                          _PLAIN),
    "unusable request id": ("open", head(body_of(), ("x-request-id", "a b")), body_of(), b"",
                            _PLAIN),
    "gzip, big answer": ("open", head(BIG, ("accept-encoding", "gzip, br")), BIG, b"", _GZIP),
    "gzip, small answer": ("open", head(body_of(), ("accept-encoding", "gzip")), body_of(), b"",
                           _GZIP),
    "identity": ("open", head(BIG, ("accept-encoding", "identity")), BIG, b"", _PLAIN),
    "async": ("open", head(body_of()), body_of(), b"mode=async", _PLAIN),
    "unknown mode": ("open", head(body_of()), body_of(), b"mode=later", _PLAIN),
    "not json": ("open", head(b"{oops"), b"{oops", b"", _PLAIN),
    "bad parameters": ("open", head(b'{"parameters": {"city": 3}}'),
                       b'{"parameters": {"city": 3}}', b"", _PLAIN),
    "no content type": ("open", [(b"host", b"127.0.0.1"), (b"content-length", b"33")],
                        body_of(), b"", _PLAIN),
    "foreign host": ("open", [(b"host", b"evil.example"), *head(body_of())[1:]], body_of(), b"",
                     _FULL),
    "last host counts": ("open", [(b"host", b"127.0.0.1"), *head(body_of())[1:],
                                  (b"host", b"evil.example")], body_of(), b"", _FULL),
    "over the limit": ("open", head(b"{" + b" " * LIMIT + b"}"), b"{" + b" " * LIMIT + b"}",
                       b"", _FULL),
    "no content-length": ("open", head(body_of(), length=False), body_of(), b"", _FULL),
    "allowed origin": ("cors", head(body_of(), ("origin", ORIGIN)), body_of(), b"", _FULL),
    "foreign origin": ("cors", head(body_of(), ("origin", "https://evil.example")), body_of(),
                       b"", _FULL),
    "no key": ("locked", head(body_of()), body_of(), b"", _FULL),
    "wrong key": ("locked", head(body_of(), ("authorization", "Bearer nope")), body_of(), b"",
                  _FULL),
    "right key": ("locked", head(body_of(), ("authorization", f"Bearer {KEY}")), body_of(), b"",
                  _PLAIN),
    "right key, scheme in lower case": (
        "locked", head(body_of(), ("authorization", f"bearer {KEY}")), body_of(), b"", _PLAIN
    ),
    "origin without cors": ("locked", head(body_of(), ("origin", ORIGIN),
                                           ("authorization", f"Bearer {KEY}")), body_of(), b"",
                            _PLAIN),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
async def test_the_front_answers_as_the_whole_stack(apps: dict[str, Any], case: str) -> None:
    which, headers, body, query, expected = CASES[case]
    app = apps[which]
    front = app.middleware_stack
    assert isinstance(front, InvokeFront)
    scope = {"type": "http", "path": "/invoke", "method": "POST", "headers": headers}
    assert front.look(scope) == expected  # the front does take the ordinary ones itself
    through_front = await call(app, headers, body, query)
    through_stack = await call(front.full, headers, body, query)
    same(through_front, through_stack)
    status, answer, _ = through_front
    assert "x-request-id" in answer
    if case == "client request id":
        assert answer["x-request-id"] == "abc-123"
    if case == "gzip, big answer":
        assert answer["content-encoding"] == "gzip" and status == 200
    if case == "allowed origin":
        assert answer["access-control-allow-origin"] == ORIGIN


async def test_an_unexpected_error_is_the_apps_500_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: Any) -> Any:
        raise RuntimeError("a bug")

    async def never(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("an ordinary invoke went down the stack")

    guard = HostGuard(never, bind="127.0.0.1")
    front = InvokeFront(never, broken, guard=guard, limit=LIMIT, key=None, cors=False)
    with caplog.at_level(logging.ERROR, logger="zserve.server"):
        status, answer, doc = await call(front, head(body_of(), ("x-request-id", "r-1")),
                                         body_of())  # fmt: skip
    assert status == 500 and answer["content-type"] == "application/problem+json"
    assert answer["x-request-id"] == "r-1"
    assert "a bug" not in json.dumps(doc) and doc["status"] == 500
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)


class Written:
    """Records a transport's writes, one entry per call (what each ``send()`` would carry)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_one_write_sends_a_head_with_its_body_and_holds_nothing_else() -> None:
    from zserve.server.protocol import OneWrite

    written = Written()
    one = OneWrite(written)  # type: ignore[arg-type]
    one.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # goes at once: the client waits for it
    assert written.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    one.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert len(written.writes) == 1  # the head waits for its body
    one.write(b"{}")
    assert written.writes[1] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    one.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    one.close()  # an answer cut short: what was held goes before the close
    assert written.writes[2].startswith(b"HTTP/1.1 500 ") and written.closed
    assert one.held is None and one.is_closing()


def test_one_write_holds_only_the_head_so_an_event_stream_is_never_held_back() -> None:
    from zserve.server.protocol import OneWrite

    written = Written()
    one = OneWrite(written)  # type: ignore[arg-type]
    one.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert written.writes == []
    one.write(b"5\r\nfirst\r\n")  # the head leaves with the first event
    one.write(b"6\r\nsecond\r\n")  # and each event after it at once
    one.write(b"5\r\nthird\r\n")
    assert written.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                              b"5\r\nfirst\r\n", b"6\r\nsecond\r\n", b"5\r\nthird\r\n"]  # fmt: skip
    one.head_next = True  # the next request on the connection (on_headers_complete)
    one.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert len(written.writes) == 3 and one.held is not None
    one.write(b"{}")
    assert written.writes[3] == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
