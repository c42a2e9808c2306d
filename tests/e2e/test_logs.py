"""What a real server logs: one line per expected event, a traceback only when a step raised,
the same for every kind of job (a cancelled sync invoke: tests/e2e/test_jobs_http.py); every
answer carries X-Request-ID and the log lines about it name it; ZSERVE_LOG_FORMAT=json writes
JSON lines."""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.e2e.conftest import wait_for, wait_status

FAILING = "zserve.examples.failing:failing_pipeline"
SLOW = "zserve.examples.slow:slow_pipeline"


def lines_with(server: Any, text: str) -> list[str]:
    return [line for line in server.output().splitlines() if text in line]


def test_sync_and_async_failures_log_alike_with_their_request_id(serve: Any) -> None:
    server = serve(FAILING)
    sync = httpx.post(
        f"{server.url}/invoke",
        json={"parameters": {"value": 1}},
        headers={"X-Request-ID": "sync-req-1"},
    )
    assert sync.status_code == 500 and sync.headers["x-request-id"] == "sync-req-1"
    accepted = httpx.post(
        f"{server.url}/invoke?mode=async",
        json={"parameters": {"value": 2}},
        headers={"X-Request-ID": "async-req-2"},
    )
    job_id = accepted.json()["job_id"]
    wait_status(server.url, job_id, "failed")
    wait_for(lambda: lines_with(server, job_id), "the async failure's log line")
    out = server.output()
    for job, request_id in ((sync.json()["job_id"], "sync-req-1"), (job_id, "async-req-2")):
        [line] = lines_with(server, f"Job {job} ")
        assert line.startswith("ERROR:") and "cannot process value" in line
        assert f"request_id={request_id}" in line
    assert out.count("Traceback (most recent call last)") == 2  # one per step failure
    assert "Exception in ASGI application" not in out


def test_a_new_request_id_when_none_or_an_unusable_one_is_sent(serve: Any) -> None:
    server = serve(FAILING)
    ids = set()
    for header in ({}, {"X-Request-ID": "has spaces in it"}, {"X-Request-ID": "x" * 200}):
        response = httpx.get(f"{server.url}/info", headers=header)
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 3 and all(len(i) == 16 for i in ids)
    assert httpx.get(f"{server.url}/health").headers["x-request-id"]


def test_a_client_gone_mid_body_logs_one_line(serve: Any) -> None:
    server = serve(SLOW)
    where = urlsplit(server.url)
    with socket.create_connection((where.hostname, where.port)) as sock:
        sock.sendall(
            b"POST /invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"parameters": '
        )
        time.sleep(0.3)
    wait_for(lambda: lines_with(server, "went away"), "the disconnect's log line")
    time.sleep(0.3)
    out = server.output()
    assert "Traceback" not in out and "ERROR" not in out, out
    assert len(lines_with(server, "went away")) == 1


def test_json_log_lines(serve: Any) -> None:
    server = serve(FAILING, ZSERVE_LOG_FORMAT="json")
    httpx.post(
        f"{server.url}/invoke", json={"parameters": {"value": 1}}, headers={"X-Request-ID": "r-1"}
    )
    docs = wait_for(
        lambda: [
            json.loads(line)
            for line in server.output().splitlines()
            if line.startswith("{") and "r-1" in line
        ],
        "the failure's JSON line",
    )
    [doc] = docs
    assert doc["level"] == "error" and doc["logger"] == "zserve.jobs"
    assert doc["request_id"] == "r-1" and "ValueError" in doc["exception"]
    for line in server.output().splitlines():
        if line.startswith("{"):
            json.loads(line)  # every log line is one JSON document
