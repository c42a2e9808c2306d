"""Three hosts behave as one service: a job submitted on one host is streamed, resumed and
cancelled on the others (issue 14, tests 1, 2 and 6). Each test prints its figures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.cluster.conftest import CLUSTER_MARKS, Cluster, job_id_of, submit
from tests.cluster.streams import (
    CLIENT_TIMEOUT,
    Received,
    astream,
    faults,
    figures_ms,
    stream,
)
from tests.e2e.conftest import fresh, wait_status

pytestmark = CLUSTER_MARKS

JOBS = 300
#: Jobs in flight at once (each is a submit, then a stream until its end).
IN_FLIGHT = 24
WORDS = 3


def test_300_jobs_streamed_from_another_host_lose_no_event(cluster: Cluster) -> None:
    urls = [h.url for h in cluster.hosts]

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, Received]:
        accepted = await client.post(
            f"{urls[i % 3]}/invoke?mode=async",
            json={"parameters": {"words": WORDS, "delay": 0.01, "prompt": f"j{i}"}},
        )
        job_id = job_id_of(accepted)
        return job_id, await astream(client, urls[(i + 1) % 3], job_id)

    async def run() -> list[tuple[int, str, Received]]:
        gate = asyncio.Semaphore(IN_FLIGHT)
        limits = httpx.Limits(max_connections=IN_FLIGHT * 2)
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=limits) as client:

            async def gated(i: int) -> tuple[int, str, Received]:
                async with gate:
                    return (i, *await one(client, i))

            return list(await asyncio.gather(*(gated(i) for i in range(JOBS))))

    started = time.monotonic()
    results = asyncio.run(run())
    took = time.monotonic() - started

    async def replays() -> list[Received]:
        # what the broker holds, read back from the third host once every job has ended
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT) as client:
            return list(await asyncio.gather(
                *(astream(client, urls[(i + 2) % 3], job_id) for i, job_id, _ in results)
            ))  # fmt: skip

    truths = asyncio.run(replays())
    totals = {"lost": 0, "duplicated": 0, "out_of_order": 0}
    latencies: list[float] = []
    events = 0
    for (_, job_id, got), truth in zip(results, truths, strict=True):
        assert truth.seqs == list(range(1, len(truth.seqs) + 1)), job_id
        assert truth.events[-1]["event"] == "job.completed", truth.events[-1]
        assert [e["event"] for e in truth.events].count("step.chunk") == WORDS
        assert got.events == [e for e in truth.events if e["seq"] in set(got.seqs)]
        for name, n in faults(got.seqs, truth.seqs).items():
            totals[name] += n
        latencies += [at - e["ts"] for e, at in zip(got.events, got.arrived, strict=True)]
        events += len(got.events)
    print(
        f"\n{JOBS} jobs ({IN_FLIGHT} at a time) submitted round-robin on 3 hosts, each streamed "
        f"from the next host: {events} events in {took:.1f} s; lost {totals['lost']}, "
        f"duplicated {totals['duplicated']}, out of order {totals['out_of_order']}; "
        f"cross-host event latency (event ts -> received): {figures_ms(latencies)}"
    )
    assert totals == {"lost": 0, "duplicated": 0, "out_of_order": 0}


def test_a_stream_read_on_one_host_resumes_on_another_with_last_event_id(
    cluster: Cluster,
) -> None:
    h1, h2, h3 = cluster.hosts
    cuts = []
    for i, cut in enumerate([3, 5, 8, 12, 16, 20]):
        # submitted on each host in turn: resumed whoever runs the job
        job_id = job_id_of(submit(cluster[i % 3].url, {"words": 20, "delay": 0.03}))
        first = stream(h1.url, job_id, until_seq=cut)  # the client goes away mid-stream
        assert first.seqs == list(range(1, cut + 1)) and not first.finished
        rest = stream(h2.url, job_id, last_event_id=first.seqs[-1])
        truth = stream(h3.url, job_id)
        assert truth.finished and truth.events[-1]["event"] == "job.completed"
        assert first.events + rest.events == truth.events, f"cut at {cut}"
        assert faults(first.seqs + rest.seqs, truth.seqs) == {
            "lost": 0, "duplicated": 0, "out_of_order": 0,
        }  # fmt: skip
        cuts.append((cut, len(truth.events)))
    print(f"\nresumed on h2 after reading on h1 (cut at seq, of): {cuts}; no gap, no duplicate")


def test_a_cancel_on_host_3_ends_a_job_running_on_host_1(cluster: Cluster) -> None:
    h1, _, h3 = cluster.hosts
    seen_by_stream: list[float] = []
    answered: list[float] = []
    for _ in range(5):
        job_id = job_id_of(submit(h1.url, {"words": 1000, "delay": 0.05}))
        got = Received()
        asked = 0.0
        with (
            httpx.Client(timeout=CLIENT_TIMEOUT) as client,
            connect_sse(client, "GET", f"{h1.url}/stream/{job_id}") as source,
        ):
            for sse in source.iter_sse():
                if not sse.data:  # a ``retry:`` alone
                    continue
                doc = got.add(sse.data, sse.event, sse.id)
                if doc["event"] == "step.chunk" and not asked:
                    job = fresh(h3.url, "GET", f"/jobs/{job_id}").json()
                    assert job["status"] == "running"
                    assert any(str(pid) in job["worker"] for pid in h1.pids), job["worker"]
                    asked = time.time()
                    answer = fresh(h3.url, "POST", f"/jobs/{job_id}/cancel")
                    answered.append(time.time() - asked)
                    assert answer.status_code == 200, answer.text
        assert got.finished and got.events[-1]["event"] == "job.cancelled"
        seen_by_stream.append(got.arrived[-1] - asked)
        assert got.seqs == list(range(1, len(got.seqs) + 1))
        assert wait_status(h3.url, job_id, "cancelled")["status"] == "cancelled"
        assert wait_status(h1.url, job_id, "cancelled")["status"] == "cancelled"
    print(
        f"\ncancel on h3 of a job running on h1: answered in {figures_ms(answered)}; "
        f"job.cancelled seen on h1's stream {figures_ms(seen_by_stream)} after the request"
    )


@pytest.fixture(autouse=True)
def _no_leftover_running(cluster: Cluster) -> Any:
    """After each test, no job is left queued or running in the cluster."""
    yield
    for status in ("queued", "running"):
        left = fresh(cluster[0].url, "GET", f"/jobs?status={status}").json()["jobs"]
        assert not left, left
