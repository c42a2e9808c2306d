"""``zserve start`` with ``ZSERVE_BROKER_URL=redis://...``: two workers serve async jobs through
a real redis-server (``scripts/test-services`` starts one; without it these tests skip)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from tests.broker.conftest import REDIS_MARKS, redis_namespace, redis_url
from tests.e2e.conftest import Detached, cli, fresh, sse_events, wait_status
from zserve.broker.redis import split_url
from zserve.settings import hide_password

pytestmark = REDIS_MARKS

#: read when the module is imported: the ``zhome`` fixture clears every ZSERVE_ variable
REDIS_URL = redis_url()
STREAMING = "zserve.examples.streaming:streaming_pipeline"
SLOW = "zserve.examples.slow:slow_pipeline"


@pytest.fixture
def broker_url(zhome: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """ZSERVE_BROKER_URL for the servers of this test: Redis, with a key prefix of its own.
    (Asked for before ``detached``, so that its keys are deleted after the servers stopped.)"""
    assert REDIS_URL is not None
    with redis_namespace(REDIS_URL) as url:
        monkeypatch.setenv("ZSERVE_BROKER_URL", url)
        yield url


def submit(url: str, params: dict[str, Any]) -> str:
    response = fresh(url, "POST", "/invoke?mode=async", json={"parameters": params})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_zserve_start_serves_async_jobs_end_to_end_on_redis_with_two_workers(
    broker_url: str, detached: Detached
) -> None:
    cli("deploy", STREAMING, "--name", "streamer")
    doc = detached("--deployment", "streamer", "--workers", "2")
    url = doc["url"]
    status = fresh(url, "GET", "/status").json()
    assert status["broker"] == {
        "kind": "redis", "url": hide_password(broker_url), "reachable": True, "problem": None,
    }  # fmt: skip
    assert status["broker_problem"] is None

    owners, pids = set(), set()
    for i in range(10):
        job_id = submit(url, {"words": 3 + i % 3, "delay": 0.01})
        events = sse_events(url, job_id)  # on a new connection: either worker answers
        words = 3 + i % 3
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert [e["event"] for e in events].count("step.chunk") == words
        assert events[-1]["event"] == "job.completed"
        job = fresh(url, "GET", f"/jobs/{job_id}").json()
        assert job["status"] == "completed" and job["outputs"] == events[-1]["outputs"]
        assert job["outputs"]["summary"]["tokens"] == words
        owners.add(job["worker"])
        # a resume from the middle gets exactly the rest, from whichever worker answers
        assert sse_events(url, job_id, last_event_id=4) == events[4:]
        pids.add(fresh(url, "GET", "/status").json()["pid"])
    assert len(pids) == 2, "both workers should have answered"

    # the jobs are in Redis, under the test's prefix
    client_url, prefix = split_url(broker_url)
    with redis.Redis.from_url(client_url) as client:
        assert client.zcard(f"{prefix}jobs") == 10
        assert owners and client.zcard(f"{prefix}leases") == 2


def test_a_stream_and_a_cancel_through_either_worker_on_redis(
    broker_url: str, detached: Detached
) -> None:
    cli("deploy", SLOW, "--name", "slow")
    url = detached("--deployment", "slow", "--workers", "2")["url"]
    for _ in range(4):  # cancelled through whichever worker answers, often not the owner
        job_id = submit(url, {"delay": 30})
        wait_status(url, job_id, "running")
        seen: list[dict[str, Any]] = []
        with (
            httpx.Client(timeout=60) as client,
            connect_sse(client, "GET", f"{url}/stream/{job_id}") as source,
        ):
            for sse in source.iter_sse():
                seen.append(json.loads(sse.data))
                if sse.event == "job.started":
                    assert fresh(url, "POST", f"/jobs/{job_id}/cancel").status_code == 200
            # the stream stays open until the terminal event comes, from the owner
        assert seen[-1]["event"] == "job.cancelled"
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
        assert wait_status(url, job_id, "cancelled")["status"] == "cancelled"
