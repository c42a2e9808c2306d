"""A host that stops (SIGTERM) on a broker many hosts share (Redis) hands its stream clients
over to another host: SSE streams get ``retry:`` and end, WebSockets close 1012, and each
client resumes on another host after its last event, ending with every event exactly once. Two
``zserve start`` hosts share one home (the store) and one Redis key prefix; the job runs to its
end on the stopping host, within its grace period. (With a local broker a SIGTERM still ends
streams with their terminal event: tests/e2e/test_jobs_http.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import psutil
import pytest
from httpx_sse import connect_sse

from tests.broker.conftest import REDIS_MARKS, redis_namespace, redis_url
from tests.e2e.balancer import balancer
from tests.e2e.conftest import Detached, Running, cli, fresh, sse_events, wait_for
from zserve.client import AsyncClient, Client
from zserve.errors import ServerError
from zserve.events import TERMINAL

pytestmark = [*REDIS_MARKS, pytest.mark.slow]

REDIS_URL = redis_url()  # read at import: the ``zhome`` fixture clears every ZSERVE_ variable
STREAMING = "zserve.examples.streaming:streaming_pipeline"
#: a job of about 4 s: 40 step.chunk events 0.1 s apart
WORDS = 40
PARAMS = {"words": WORDS, "delay": 0.1}


@pytest.fixture
def shared_broker(zhome: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """ZSERVE_BROKER_URL for the hosts of this test: Redis, with a key prefix of its own, and
    a long grace period, so that a stopping host runs its jobs to their end. (Asked for before
    ``detached``, so that its keys are deleted after the hosts stopped.)"""
    assert REDIS_URL is not None
    with redis_namespace(REDIS_URL) as url:
        monkeypatch.setenv("ZSERVE_BROKER_URL", url)
        monkeypatch.setenv("ZSERVE_GRACE_S", "60")
        yield url


def start_hosts(detached: Detached) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two hosts (``zserve start`` documents) on one home (the store) and one broker."""
    cli("deploy", STREAMING, "--name", "streamer")
    one = detached("--deployment", "streamer", "--host-id", "host-1")
    two = detached("--deployment", "streamer", "--host-id", "host-2")
    return one, two


def submit(url: str) -> str:
    response = fresh(url, "POST", "/invoke?mode=async", json={"parameters": PARAMS})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/stream"


def stop(host: dict[str, Any]) -> float:
    """SIGTERM a host: the moment it was sent."""
    os.kill(host["pid"], signal.SIGTERM)
    return time.monotonic()


def check_whole(events: list[dict[str, Any]]) -> None:
    """Every event of a streaming job, each once, in order, up to its completion."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["event"] for e in events].count("step.chunk") == WORDS
    assert events[-1]["event"] == "job.completed"
    assert events[-1]["outputs"]["summary"]["tokens"] == WORDS
    assert [e["event"] in TERMINAL for e in events].count(True) == 1


def test_sigterm_on_redis_hands_sse_and_websocket_clients_over_to_another_host(
    shared_broker: str, detached: Detached
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    one, two = start_hosts(detached)
    sse_job = submit(one["url"])
    seen: list[dict[str, Any]] = []
    retries: list[int] = []
    ws_seen: list[dict[str, Any]] = []
    with ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=60))
        source = stack.enter_context(connect_sse(client, "GET", f"{one['url']}/stream/{sse_job}"))
        blocks = source.iter_sse()
        while len(seen) < 4:
            seen.append(json.loads(next(blocks).data))
        ws = stack.enter_context(connect(ws_url(one["url"])))
        ws.send(json.dumps({"parameters": PARAMS}))
        while len(ws_seen) < 4:
            ws_seen.append(json.loads(ws.recv(30)))
        ws_job = ws_seen[0]["job_id"]

        sent = stop(one)
        for sse in blocks:  # up to the end of the stream
            if sse.data:
                seen.append(json.loads(sse.data))
            else:
                assert sse.retry is not None
                retries.append(sse.retry)
        handed_s = time.monotonic() - sent
        with pytest.raises(ConnectionClosed):
            while True:
                ws_seen.append(json.loads(ws.recv(30)))
        assert ws.close_code == 1012 and "reattach" in (ws.close_reason or "")

    # host 1 sent no terminal event: it told its clients to go elsewhere
    assert retries == [500]
    assert not [e for e in seen + ws_seen if e["event"] in TERMINAL]
    # while it drains (its jobs still run), a stream opened there is handed over at once...
    late = httpx.get(f"{one['url']}/stream/{sse_job}", timeout=30,
                     headers={"Last-Event-ID": str(seen[-1]["seq"])})  # fmt: skip
    assert late.status_code == 200 and late.headers["connection"] == "close"
    assert late.text.endswith("retry: 500\n\n") and "data:" not in late.text
    assert httpx.get(f"{one['url']}/readyz").status_code == 503
    # ...and our client, pointed at host 1 alone, gives up (no other host behind that URL)
    with Client(one["url"]) as alone, pytest.raises(ServerError, match="could not be resumed"):
        for _ in alone.events(sse_job, seen[-1]["seq"], reconnect_s=0.5):
            pass

    # the clients resume on host 2 after their last event
    rest = sse_events(two["url"], sse_job, last_event_id=seen[-1]["seq"])
    check_whole(seen + rest)
    with connect(ws_url(two["url"])) as ws:
        ws.send(json.dumps({"job_id": ws_job, "after": ws_seen[-1]["seq"]}))
        ws_rest = [json.loads(m) for m in ws]
    assert ws.close_code == 1000
    check_whole(ws_seen + ws_rest)

    # both jobs ran on host 1, to their end, within its grace period; then it stopped
    for job_id in (sse_job, ws_job):
        job = fresh(two["url"], "GET", f"/jobs/{job_id}").json()
        assert job["status"] == "completed" and job["worker"].startswith(f"{one['pid']}-")
    psutil.Process(one["pid"]).wait(60)
    print(f"\nhandoff: the SSE stream ended {handed_s * 1000:.0f} ms after SIGTERM; "
          f"{len(seen)} events from host 1 and {len(rest)} from host 2 (SSE), "
          f"{len(ws_seen)} and {len(ws_rest)} (WebSocket)")  # fmt: skip


def test_our_clients_follow_a_handoff_through_a_balancer(
    shared_broker: str, detached: Detached, running: Any
) -> None:
    """``Client.events``, ``AsyncClient.events`` and ``zserve stream`` behind a balancer
    that sends each new connection to a ready host: they end with every event once."""
    one, two = start_hosts(detached)
    jobs = [submit(one["url"]) for _ in range(3)]
    found: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in jobs}
    failures: list[BaseException] = []
    with balancer([one["url"], two["url"]]) as lb:

        def follow_sync(job_id: str) -> None:
            try:
                with Client(lb.url, timeout=30) as client:
                    found[job_id].extend(client.events(job_id))
            except BaseException as exc:
                failures.append(exc)

        async def follow_async(job_id: str) -> None:
            async with AsyncClient(lb.url, timeout=30) as client:
                async for event in client.events(job_id):
                    found[job_id].append(event)

        def run_async(job_id: str) -> None:
            try:
                asyncio.run(follow_async(job_id))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=follow_sync, args=(jobs[0],)),
                   threading.Thread(target=run_async, args=(jobs[1],))]  # fmt: skip
        for thread in threads:
            thread.start()
        cli_stream: Running = running("stream", jobs[2], "--url", lb.url, "--jsonl")
        try:
            cli_stream.wait_line(r"step\.chunk")
            wait_for(lambda: all(len(found[j]) >= 4 for j in jobs[:2]), "events on host 1")
            stop(one)
            code, stderr = cli_stream.finish(60)
        finally:
            for thread in threads:
                thread.join(60)
        routed = list(lb.routed)

    assert not failures, failures
    assert code == 0, stderr
    found[jobs[2]] = [json.loads(line) for line in cli_stream.lines]
    for job_id in jobs:
        check_whole(found[job_id])
        streams = [host for host, line in routed if line.startswith(f"GET /stream/{job_id} ")]
        assert streams[0] == one["url"] and streams[-1] == two["url"], streams
    psutil.Process(one["pid"]).wait(60)
    print(f"\nhandoff through a balancer: {len(routed)} connections, "
          f"{sum(host == two['url'] for host, _ in routed)} of them to host 2")  # fmt: skip
