"""What anyone who can reach a server could do before auth: huge or countless headers (431,
never buffered), slowloris sockets (closed after ZSERVE_HEADER_TIMEOUT_S), and piles of idle
connections (the oldest idle ones are closed at ZSERVE_MAX_CONNECTIONS, /health keeps
answering). Each limit logs one line."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

WEATHER = "zserve.examples.weather:weather_pipeline"


def address(server: Any) -> tuple[str, int]:
    where = urlsplit(server.url)
    assert where.hostname is not None and where.port is not None
    return where.hostname, where.port


def head(server: Any, extra: bytes) -> bytes:
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n")
        return sock.recv(4096)


def test_big_or_many_headers_are_431_and_not_buffered(serve: Any) -> None:
    server = serve(WEATHER, ZSERVE_MAX_HEADER_BYTES="16384", ZSERVE_MAX_HEADERS="50")
    rss_before = psutil.Process(server.proc.pid).memory_info().rss
    big = b"X-Big: " + b"a" * 50_000_000 + b"\r\n"  # 50 MB of one header
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(OSError):  # the server closes the connection mid-way
            sock.sendall(big)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(60))
    assert head(server, many).startswith(b"HTTP/1.1 431 ")
    assert head(server, b"X-Ok: fine\r\n").startswith(b"HTTP/1.1 200 ")
    grew = (psutil.Process(server.proc.pid).memory_info().rss - rss_before) / 2**20
    print(f"\nworker memory after a 50 MB header: +{grew:.1f} MiB")
    assert grew < 20
    assert "Refused a request head" in server.output()


def test_a_large_body_read_with_its_head_is_not_taken_for_a_large_head(serve: Any) -> None:
    server = serve(WEATHER, ZSERVE_MAX_HEADER_BYTES="16384")
    body = b'{"parameters": {"city": "' + b"p" * 900_000 + b'"}}'
    head = (b"POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))  # fmt: skip
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(head + body)  # one write: the server reads far more than a head at once
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b"p" * 1000 in answer
    # pipelined: the next request's head straddles the bound (16384 + 65536 bytes) that the
    # first head must end within
    head = (b"POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %05d\r\n\r\n")  # fmt: skip
    filler = 16384 + 65536 - len(head % 0) - 10 - len(b'{"parameters": {"city": ""}}')
    body = b'{"parameters": {"city": "' + b"q" * filler + b'"}}'
    first = head % len(body)
    second = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(first + body + second)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:300]


def test_slowloris_sockets_are_closed(serve: Any) -> None:
    server = serve(WEATHER, ZSERVE_HEADER_TIMEOUT_S="1")
    socks = []
    for _ in range(200):
        sock = socket.create_connection(address(server), timeout=10)
        sock.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(sock)
    silent = socket.create_connection(address(server), timeout=10)  # sends nothing at all
    socks.append(silent)
    start = time.monotonic()
    for sock in socks:
        sock.settimeout(10)
        assert sock.recv(100) == b""  # closed by the server
        sock.close()
    took = time.monotonic() - start
    print(f"\n201 slow sockets closed within {took:.1f} s (ZSERVE_HEADER_TIMEOUT_S=1)")
    assert took < 5
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert "no complete request head" in server.output()


def test_idle_connections_cannot_lock_out_health(serve: Any) -> None:
    server = serve(WEATHER, ZSERVE_MAX_CONNECTIONS="50")
    socks = []
    for _ in range(120):  # keep-alive connections that made one request and then idle
        sock = socket.create_connection(address(server), timeout=10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        socks.append(sock)
    open_now = wait_for(
        lambda: (n := len(psutil.Process(server.proc.pid).net_connections())) <= 52 and n,
        "the worker to keep at most its cap of connections",
    )
    print(f"\n120 idle keep-alive connections: the worker keeps {open_now} open (cap 50)")
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert "Connection limit (50 per worker" in server.output()
    for sock in socks:
        sock.close()


def read_answers(sock: socket.socket, count: int, head_only: bool = False) -> list[bytes]:
    """``count`` HTTP answers read off ``sock``: each head, and its Content-Length of body."""
    data, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {answers!r} {data!r}"
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and not head_only:
                length = int(value)
        while len(data) < length:
            data += sock.recv(65536)
        answers.append(head + b"\r\n\r\n" + data[:length])
        data = data[length:]
    return answers


def test_invoke_answers_keep_their_order_and_100_continue_is_not_held(serve: Any) -> None:
    """POST /invoke answers leave in one write (protocol.OneWrite): a 100 Continue still goes
    at once, an answer without a body (HEAD) is not held back, pipelined answers keep order."""
    server = serve(WEATHER)
    body = b'{"parameters": {"city": "Lima"}}'
    post = (b"POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n" % len(body))  # fmt: skip
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(post + b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n")  # before the body
        sock.sendall(body)
        (answer,) = read_answers(sock, 1)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"Lima" in answer
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"HEAD /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        (answer,) = read_answers(sock, 1, head_only=True)
        assert answer.startswith(b"HTTP/1.1 405 ")
        sock.sendall(b"".join(post + b"\r\n" + body.replace(b"Lima", city) for city in
                              (b"Oslo", b"Rome", b"Kyiv")))  # fmt: skip
        answers = read_answers(sock, 3)
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 3
    assert [b"Oslo" in answers[0], b"Rome" in answers[1], b"Kyiv" in answers[2]] == [True] * 3
