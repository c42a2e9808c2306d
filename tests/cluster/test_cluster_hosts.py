"""A host that dies or stops while it runs jobs (issue 14, tests 3 and 4): the other hosts end
its jobs, or its stream clients finish on another host."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.cluster.conftest import CLUSTER_MARKS, Cluster, job_id_of, submit
from tests.cluster.harness import wait_gone
from tests.cluster.streams import Received, faults, figures_ms, stream
from tests.e2e.conftest import fresh, wait_for, wait_status
from zserve.jobs.upkeep import HEARTBEAT_S, LEASE_TTL_S

pytestmark = CLUSTER_MARKS


def runs_on(job: dict[str, Any], pids: list[int]) -> bool:
    return job["status"] == "running" and any(str(pid) in job["worker"] for pid in pids)


def test_the_jobs_of_a_host_killed_with_sigkill_fail_as_worker_lost(cluster: Cluster) -> None:
    h1, h2, _ = cluster.hosts
    job_ids = [job_id_of(submit(h1.url, {"words": 1000, "delay": 0.05})) for _ in range(6)]
    for job_id in job_ids:
        wait_for(lambda j=job_id: runs_on(fresh(h2.url, "GET", f"/jobs/{j}").json(), h1.pids),
                 f"job {job_id} to run on h1")  # fmt: skip

    killed = time.monotonic()
    h1.kill()
    ended: dict[str, float] = {}
    docs: dict[str, dict[str, Any]] = {}

    def all_ended() -> bool:
        with httpx.Client(base_url=h2.url, timeout=10) as client:
            for job_id in set(job_ids) - set(ended):
                doc = client.get(f"/jobs/{job_id}").json()
                if doc["status"] != "running":
                    ended[job_id], docs[job_id] = time.monotonic() - killed, doc
        return len(ended) == len(job_ids)

    wait_for(all_ended, "h2 to end h1's jobs", deadline_s=60, every=0.05)
    assert {d["status"] for d in docs.values()} == {"failed"}
    assert {d["error"]["reason"] for d in docs.values()} == {"worker_lost"}
    running = fresh(h2.url, "GET", "/jobs?status=running").json()["jobs"]
    assert not running, running
    # their streams end too, on any host
    truth = stream(h2.url, job_ids[0])
    assert truth.finished and truth.events[-1]["event"] == "job.failed"
    print(
        f"\n{len(job_ids)} jobs of h1 (SIGKILL) seen failed/worker_lost on h2 after "
        f"{figures_ms(list(ended.values()))}; lease {LEASE_TTL_S:g} s + sweep every "
        f"{HEARTBEAT_S:g} s = {LEASE_TTL_S + HEARTBEAT_S:g} s; none left running"
    )


class Follower(threading.Thread):
    """A stream client of one job that starts on ``first`` and, when a stream closes cleanly
    before the job's terminal event, resumes on ``then`` with Last-Event-ID."""

    def __init__(self, job_id: str, first: str, then: str) -> None:
        super().__init__(daemon=True)
        self.job_id, self.urls = job_id, [first, then]
        self.parts: list[tuple[str, Received]] = []
        self.error: BaseException | None = None

    @property
    def seqs(self) -> list[int]:
        return [s for _, got in self.parts for s in got.seqs]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for _, got in self.parts for e in got.events]

    def run(self) -> None:
        last: int | None = None
        try:
            for attempt in range(4):
                url = self.urls[min(attempt, 1)]
                got = Received()
                self.parts.append((url, got))
                stream(url, self.job_id, last_event_id=last, into=got)
                if got.finished:
                    return
                last = got.seqs[-1] if got.seqs else last
        except BaseException as exc:
            self.error = exc


def test_stream_clients_of_a_host_stopped_with_sigterm_finish_on_another_host(
    cluster: Cluster,
) -> None:
    h1, h2, h3 = cluster.hosts
    job_ids = [job_id_of(submit(h1.url, {"words": 100, "delay": 0.05})) for _ in range(4)]
    followers = [Follower(job_id, h1.url, h2.url) for job_id in job_ids]
    for follower in followers:
        follower.start()
    wait_for(lambda: all(len(f.seqs) >= 5 for f in followers), "every client to have events")
    for job_id in job_ids:
        assert runs_on(fresh(h2.url, "GET", f"/jobs/{job_id}").json(), h1.pids)

    h1.terminate()
    for follower in followers:
        follower.join(60)
        assert not follower.is_alive() and follower.error is None, follower.error
    wait_gone(h1.pids, timeout=60)
    h1.gone = True
    moved = 0
    for follower in followers:
        truth = stream(h3.url, follower.job_id)
        assert truth.finished and truth.events[-1]["event"] == "job.completed"
        assert faults(follower.seqs, truth.seqs) == {
            "lost": 0, "duplicated": 0, "out_of_order": 0,
        }  # fmt: skip
        assert follower.events == truth.events
        moved += follower.parts[-1][0] == h2.url
    gaps = [f.parts[-1][1].arrived[0] - f.parts[0][1].arrived[-1]
            for f in followers if len(f.parts) > 1 and f.parts[-1][1].arrived]  # fmt: skip
    print(
        f"\nSIGTERM on h1: {moved} of {len(followers)} stream clients finished on h2, every "
        f"event once; gap between the last event on h1 and the first on h2: "
        f"{figures_ms(gaps) if gaps else 'none'}"
    )
    # the spec: with a shared broker, a draining host sends its stream clients elsewhere
    assert moved == len(followers)
    for job_id in job_ids:
        wait_status(h2.url, job_id, "completed")
