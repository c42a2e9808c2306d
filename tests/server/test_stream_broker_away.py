"""A stream whose broker stops answering mid-way (its redis-server killed) ends at once with
a comment and a retry delay (SSE) or close code 1013, try again later (WebSocket): a clean end
the client resumes from, never a cut connection, a traceback or a hang."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.broker.conftest import REDIS_MARKS
from tests.broker.own_redis import OwnRedis, own_redis

pytestmark = [*REDIS_MARKS, pytest.mark.slow]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[OwnRedis]:
    with own_redis(tmp_path) as server:
        yield server


STREAMING = "zserve.examples.streaming:streaming_pipeline"
SLOW_WORDS = {"words": 200, "delay": 0.05}


def test_an_sse_stream_ends_with_a_retry_when_its_broker_goes(
    make_client: Any, redis_server: OwnRedis
) -> None:
    client = make_client(STREAMING, broker_url=redis_server.url, grace_s=1.0)
    job_id = client.post("/invoke?mode=async", json={"parameters": SLOW_WORDS}).json()["job_id"]
    lines: list[str] = []
    with client.stream("GET", f"/stream/{job_id}") as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            lines.append(line)
            if line.startswith("event: step.chunk") and redis_server.proc is not None:
                redis_server.kill()
    ids = [int(x.removeprefix("id: ")) for x in lines if x.startswith("id: ")]
    assert ids == list(range(1, len(ids) + 1)) and ids
    assert not any(
        x.startswith("event: job.") and x.endswith(("completed", "failed")) for x in lines
    )
    assert lines[-3:] == [
        ": the job broker does not answer: reconnect with Last-Event-ID",
        "retry: 2000",
        "",
    ]


def test_a_websocket_stream_closes_1013_when_its_broker_goes(
    make_client: Any, redis_server: OwnRedis
) -> None:
    client = make_client(STREAMING, broker_url=redis_server.url, grace_s=1.0)
    seen: list[dict[str, Any]] = []
    with client.websocket_connect("/stream") as ws:
        ws.send_text(json.dumps({"parameters": SLOW_WORDS}))
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                seen.append(json.loads(ws.receive_text()))
                if seen[-1]["event"] == "step.chunk" and redis_server.proc is not None:
                    redis_server.kill()
    assert closed.value.code == 1013
    assert "broker" in closed.value.reason
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
