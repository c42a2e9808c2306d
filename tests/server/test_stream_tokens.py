"""Stream tokens: a browser follows one job of a server with an auth key, without the key in a
URL; a token opens that job's streams only, and expires."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.server.test_http import WEATHER, assert_problem
from zserve.server.tokens import StreamTokens

KEY = "k" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_tokens_are_per_job_and_expire() -> None:
    tokens = StreamTokens(KEY, ttl_s=60)
    token, expires = tokens.issue("job-1", now=1000)
    assert expires == 1060 and tokens.valid(token, "job-1", now=1059)
    assert not tokens.valid(token, "job-1", now=1061)
    assert not tokens.valid(token, "job-2", now=1001)
    assert not StreamTokens("another key" * 3).valid(token, "job-1", now=1001)
    for forged in ("", "1060", "1060.", "x.y", f"9999999999.{token.split('.')[1]}"):
        assert not tokens.valid(forged, "job-1", now=1001)
    assert KEY not in token


def async_job(client: Any) -> dict[str, Any]:
    response = client.post("/invoke?mode=async", json={"parameters": {"city": "a"}}, headers=AUTH)
    assert response.status_code == 202
    doc: dict[str, Any] = response.json()
    deadline = time.monotonic() + 10
    while client.get(f"/jobs/{doc['job_id']}", headers=AUTH).json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return doc


def test_sse_with_a_token_and_without(make_client: Any) -> None:
    client = make_client(WEATHER, auth_key=KEY)
    accepted = async_job(client)
    job_id = accepted["job_id"]
    link = accepted["links"]["stream_token"]
    assert link.startswith(f"/stream/{job_id}?token=")
    assert client.get(link).status_code == 200  # the 202's link works as it is
    issued = client.post(f"/jobs/{job_id}/token", headers=AUTH).json()
    assert issued["job_id"] == job_id and issued["expires_at"]
    events = client.get(issued["stream"])
    assert events.status_code == 200 and "job.completed" in events.text
    doc = assert_problem(client.get(f"/stream/{job_id}?token=1.forged"), 401)
    assert "stream token" in doc["detail"]
    assert_problem(client.get(f"/stream/{job_id}"), 401)
    # a token opens the streams of its job, nothing else
    other = async_job(client)["job_id"]
    assert_problem(client.get(f"/stream/{other}?token={issued['token']}"), 401)
    assert_problem(client.get(f"/jobs/{job_id}?token={issued['token']}"), 401)
    assert_problem(client.post(f"/jobs/{job_id}/token"), 401)  # issuing needs the key
    # and the key itself is never taken from a URL
    assert_problem(client.get(f"/stream/{job_id}?token={KEY}"), 401)


def test_websocket_attach_with_a_token(make_client: Any) -> None:
    client = make_client(WEATHER, auth_key=KEY)
    job_id = async_job(client)["job_id"]
    token = client.post(f"/jobs/{job_id}/token", headers=AUTH).json()["token"]
    with client.websocket_connect(f"/stream?token={token}") as ws:
        ws.send_json({"job_id": job_id})
        events = [ws.receive_json()]
        while events[-1]["event"] != "job.completed":
            events.append(ws.receive_json())
    with client.websocket_connect(f"/stream?token={token}") as ws:
        ws.send_json({"parameters": {"city": "b"}})  # a token never submits a job
        frame = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert frame["status"] == 401 and closed.value.code == 1008


def test_no_tokens_without_a_key(make_client: Any) -> None:
    client = make_client(WEATHER)
    accepted = client.post("/invoke?mode=async", json={"parameters": {"city": "a"}}).json()
    assert "stream_token" not in accepted["links"]
    doc = assert_problem(client.post(f"/jobs/{accepted['job_id']}/token"), 400)
    assert "no auth key" in doc["detail"]
