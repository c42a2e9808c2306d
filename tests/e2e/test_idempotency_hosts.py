"""``Idempotency-Key`` across hosts: two ``zserve start`` servers sharing one redis-server (a key
prefix of the test's own) answer a retried async submit with the first job, whichever host the
first and the retried request reached; the key with another body is 409. Skipped without Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.broker.conftest import REDIS_MARKS, redis_namespace, redis_url
from tests.e2e.conftest import Detached, cli, fresh, wait_status
from zserve.client import AsyncClient, Client
from zserve.errors import IdempotencyKeyReused

pytestmark = REDIS_MARKS

#: read when the module is imported: the ``zhome`` fixture clears every ZSERVE_ variable
REDIS_URL = redis_url()
SLOW = "zserve.examples.slow:slow_pipeline"


@pytest.fixture
def broker_url(zhome: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """ZSERVE_BROKER_URL for the servers of this test (asked for before ``detached``, so that
    its keys are deleted after the servers stopped)."""
    assert REDIS_URL is not None
    with redis_namespace(REDIS_URL) as url:
        monkeypatch.setenv("ZSERVE_BROKER_URL", url)
        yield url


def submit(url: str, body: dict[str, Any], key: str) -> httpx.Response:
    return fresh(url, "POST", "/invoke?mode=async", json=body, headers={"Idempotency-Key": key})


def jobs_of(url: str) -> list[str]:
    return [j["job_id"] for j in fresh(url, "GET", "/jobs").json()["jobs"]]


def test_a_submit_retried_on_another_host_returns_the_first_job(
    broker_url: str, detached: Detached
) -> None:
    cli("deploy", SLOW, "--name", "slow")
    one = detached("--deployment", "slow", "--host-id", "one")["url"]
    two = detached("--deployment", "slow", "--host-id", "two")["url"]
    body = {"parameters": {"delay": 0.3, "tag": "once"}}

    first = submit(one, body, "order-42")
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    job_id = first.json()["job_id"]
    again = submit(two, body, "order-42")  # as a load balancer retrying on another host would
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["job_id"] == job_id
    assert again.headers["location"] == first.headers["location"] == f"/jobs/{job_id}"
    assert jobs_of(one) == jobs_of(two) == [job_id]

    # the key with another body, on either host: 409, and still one job
    for url in (one, two):
        reused = submit(url, {"parameters": {"delay": 0.3, "tag": "twice"}}, "order-42")
        assert reused.status_code == 409, reused.text
        assert reused.headers["content-type"] == "application/problem+json"
        doc = reused.json()
        assert doc["type"].endswith("/idempotency-key-reused") and doc["job_id"] == job_id
        assert "new key" in doc["detail"]
    assert jobs_of(two) == [job_id]

    # after the job ended, a retry still finds it (until ZSERVE_JOB_TTL_S forgets both)
    done = wait_status(two, job_id, "completed")
    assert done["outputs"] == {"tag": "once"} and done["worker"]
    late = submit(two, body, "order-42")
    assert late.json() | {"links": None} == first.json() | {"links": None, "status": "completed"}

    # the Python clients: the same key, the same job; another body, IdempotencyKeyReused
    with Client(one) as client:
        assert client.submit(body["parameters"], idempotency_key="order-42")["job_id"] == job_id
        with pytest.raises(IdempotencyKeyReused) as reused_err:
            client.submit({"delay": 1}, idempotency_key="order-42")
        assert reused_err.value.job_id == job_id and reused_err.value.exit_code == 2

    async def from_async_client() -> str:
        async with AsyncClient(two) as client:
            doc = await client.submit(body["parameters"], idempotency_key="order-42")
            return str(doc["job_id"])

    assert asyncio.run(from_async_client()) == job_id

    # `zserve invoke --async --idempotency-key`: the same id from either host
    printed = [
        cli("invoke", "--url", url, "--async", "--idempotency-key", "cli-key",
            "--param", "delay=0.01").stdout.strip()
        for url in (one, two, one)
    ]  # fmt: skip
    assert len(set(printed)) == 1 and len(printed[0]) == 36
    assert sorted(jobs_of(one)) == sorted([job_id, printed[0]])
    other = cli("invoke", "--url", two, "--async", "--idempotency-key", "cli-key",
                "--param", "delay=0.02", check=False)  # fmt: skip
    assert other.returncode == 2 and other.stderr.startswith("Error: Idempotency-Key 'cli-key'")
    assert "new key" in other.stderr


def test_simultaneous_submits_with_one_key_on_two_hosts_make_one_job(
    broker_url: str, detached: Detached
) -> None:
    cli("deploy", SLOW, "--name", "slow")
    hosts = [detached("--deployment", "slow", "--host-id", n)["url"] for n in ("one", "two")]
    body = {"parameters": {"delay": 0.01}}
    rounds, per_round = 5, 20
    with ThreadPoolExecutor(per_round) as pool:
        for _ in range(rounds):
            key = str(uuid.uuid4())
            start = time.perf_counter()
            answers = list(pool.map(lambda i, k=key: submit(hosts[i % 2], body, k),
                                    range(per_round)))  # fmt: skip
            took = time.perf_counter() - start
            assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
            ids = {a.json()["job_id"] for a in answers}
            fresh_ones = [a for a in answers if "idempotent-replayed" not in a.headers]
            assert len(ids) == 1 and len(fresh_ones) == 1
            print(f"\n{per_round} simultaneous submits, one key, 2 hosts: 1 job, "
                  f"{per_round - 1} replays, {took * 1000:.0f} ms")  # fmt: skip
    assert len(jobs_of(hosts[0])) == rounds
