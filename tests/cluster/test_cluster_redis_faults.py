"""The shared redis-server killed with SIGKILL mid-run and started again from its AOF (issue 14,
test 5), for longer than a lease: no job or event is lost (nor failed ``worker_lost`` by another
host once Redis is back), sync invokes succeed throughout, and async submits get 503 with
Retry-After while Redis is down, never a hang."""

from __future__ import annotations

import threading
import time

import httpx

from tests.cluster.conftest import CLUSTER_MARKS, Cluster, job_id_of, submit
from tests.cluster.streams import Received, faults, figures_ms, stream
from tests.e2e.conftest import fresh, wait_for
from zserve.jobs.upkeep import LEASE_TTL_S

pytestmark = CLUSTER_MARKS

WORDS = 120
#: Longer than a lease: when Redis comes back every host's lease has run out, and still no host
#: may fail another's jobs (each sweeps only after a whole lease period of its own writes).
OUTAGE_S = LEASE_TTL_S + 1.5
#: No request of this test waits longer than this for its answer.
REQUEST_TIMEOUT = httpx.Timeout(10, connect=5)


class Hammer(threading.Thread):
    """Sync ``/invoke`` on each host in turn, as fast as they answer, until stopped."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        #: (sent at, seconds it took, status or error)
        self.answers: list[tuple[float, float, int | str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        clients = [httpx.Client(base_url=u, timeout=REQUEST_TIMEOUT) for u in self.urls]
        i = 0
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                r = clients[i % 3].post("/invoke", json={"parameters": {"words": 2, "delay": 0}})
                outcome: int | str = r.status_code
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            self.answers.append((sent, time.monotonic() - sent, outcome))
            i += 1
        for c in clients:
            c.close()


class Follower(threading.Thread):
    """Streams one job until its terminal event, resuming (Last-Event-ID) on the next host
    whenever a stream ends or breaks before it."""

    def __init__(self, job_id: str, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.job_id, self.urls = job_id, urls
        self.got = Received()
        self.breaks: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + 90
        attempt = 0
        while not self.got.finished and time.monotonic() < deadline:
            last = self.got.seqs[-1] if self.got.seqs else None
            try:
                stream(self.urls[attempt % 3], self.job_id, last_event_id=last, into=self.got)
                why = "closed"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            if not self.got.finished:
                self.breaks.append(why)
                time.sleep(0.2)
            attempt += 1


def test_redis_killed_and_restarted_from_its_aof_loses_no_job_or_event(cluster: Cluster) -> None:
    urls = [h.url for h in cluster.hosts]
    hammer = Hammer(urls)
    hammer.start()
    job_ids = [
        job_id_of(submit(urls[i % 3], {"words": WORDS, "delay": 0.05, "prompt": f"j{i}"}))
        for i in range(6)
    ]
    followers = [Follower(job_id, urls[i + 1 :] + urls[: i + 1])
                 for i, job_id in enumerate(job_ids)]  # fmt: skip
    for follower in followers:
        follower.start()
    wait_for(lambda: all(len(f.got.seqs) >= 6 for f in followers), "the jobs to stream")

    cluster.redis.kill()
    down = time.monotonic()
    refused: list[tuple[float, httpx.Response]] = []
    while time.monotonic() - down < OUTAGE_S:  # async submits while Redis is down
        for url in urls:
            sent = time.monotonic()
            answer = submit(url, {"words": 1}, timeout=REQUEST_TIMEOUT)
            refused.append((time.monotonic() - sent, answer))
        time.sleep(0.1)
    cluster.redis.start()  # from its AOF
    up = time.monotonic()

    for follower in followers:
        follower.join(90)
        assert not follower.is_alive(), f"job {follower.job_id} never ended"
    wait_for(lambda: submit(urls[0], {"words": 1}).status_code == 202, "async submits again")
    hammer.stopping.set()
    hammer.join(30)

    # async submits while Redis was down: 503 with Retry-After, answered at once
    assert {a.status_code for _, a in refused} == {503}, [a.text for _, a in refused][:3]
    assert all(a.headers.get("Retry-After") for _, a in refused)
    assert {a.json()["type"].rsplit("/", 1)[-1] for _, a in refused} == {"broker-unavailable"}
    # no job and no event lost
    totals = {"lost": 0, "duplicated": 0, "out_of_order": 0}
    statuses = []
    for follower in followers:
        truth = stream(urls[0], follower.job_id)
        job = fresh(urls[1], "GET", f"/jobs/{follower.job_id}").json()
        statuses.append(job["status"] if job["status"] != "failed" else job["error"])
        for name, n in faults(follower.got.seqs, truth.seqs).items():
            totals[name] += n
        assert follower.got.events == truth.events
        assert truth.seqs == list(range(1, len(truth.seqs) + 1))
    # sync invokes: all answered 200, during the outage too
    during = [a for a in hammer.answers if down <= a[0] <= up]
    bad = [a for a in hammer.answers if a[2] != 200]
    print(
        f"\nredis-server killed (SIGKILL) for {up - down:.1f} s and started from its AOF: "
        f"{len(refused)} async submits meanwhile answered 503 + Retry-After "
        f"{sorted({a.headers['Retry-After'] for _, a in refused})} in "
        f"{figures_ms([t for t, _ in refused])}; sync /invoke: {len(hammer.answers)} calls, "
        f"{len(during)} while Redis was down, {len(bad)} not 200, latency "
        f"{figures_ms([a[1] for a in hammer.answers])}; jobs {statuses}; events {totals}; "
        f"stream breaks {[f.breaks for f in followers]}"
    )
    assert not bad, bad[:5]
    assert during, "no sync invoke was made while Redis was down"
    assert statuses == ["completed"] * len(job_ids)
    assert totals == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert all([e["event"] for e in f.got.events].count("step.chunk") == WORDS
               for f in followers)  # fmt: skip
