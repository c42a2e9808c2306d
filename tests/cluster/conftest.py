"""Three zserve hosts on one machine sharing one redis-server and one PostgreSQL database, as
issue 14's tests want them.

- ``cluster_redis`` (session): a redis-server of these tests' own, with its AOF, so that a
  test may ``kill -9`` it and start it again from its AOF (never the shared one);
- ``cluster_store`` (session): a PostgreSQL database of their own on the shared server
  (``ZSERVE_TEST_POSTGRES_URL``), with the streaming pipeline deployed into it once;
- ``cluster`` (per test): three hosts ``h1``, ``h2``, ``h3`` (``zserve start --detach``, one
  worker each, a ZSERVE_HOME each) on a key prefix of the test's own; ``make_cluster`` starts
  them with other settings or on another store. They are stopped after the test (SIGTERM, a
  wait, SIGKILL), and a process left behind fails it.

Without redis-server or PostgreSQL, the tests skip.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.harness import (
    REDIS_SERVER,
    Host,
    RedisServer,
    deploy,
    start_host,
    stop_pids,
    wait_gone,
)
from tests.store.store_backends import POSTGRES_URL_ENV, postgres_database

#: Read at import: the ``zhome`` fixture clears every ZSERVE_ variable.
POSTGRES_ADMIN = os.environ.get(POSTGRES_URL_ENV) or None

CLUSTER_MARKS = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.postgresql,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
    pytest.mark.skipif(
        POSTGRES_ADMIN is None, reason=f"{POSTGRES_URL_ENV} is not set: scripts/test starts it"
    ),
]


@dataclass
class Cluster:
    """Hosts sharing a broker (``broker_url``: the harness redis-server, a prefix of the
    test's own) and a store (``store_url``), serving ``deployment``."""

    redis: RedisServer
    broker_url: str
    store_url: str
    deployment: str
    directory: Path
    settings: dict[str, str] = field(default_factory=dict)
    hosts: list[Host] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.broker_url.rsplit("prefix=", 1)[1]

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def start(self, name: str, **settings: str) -> Host:
        """Start (or start again) host ``name``."""
        host = self._launch(name, settings)
        self.hosts.append(host)
        return host

    def _launch(self, name: str, settings: dict[str, str]) -> Host:
        return start_host(
            name, self.directory / name, self.deployment, self.broker_url, self.store_url,
            **{**self.settings, **settings},
        )  # fmt: skip

    def start_many(self, names: list[str]) -> list[Host]:
        """Start several hosts at once (each ``zserve start`` waits for its /health)."""
        found: dict[str, Host] = {}
        errors: list[BaseException] = []

        def one(name: str) -> None:
            try:
                found[name] = self._launch(name, {})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        started = [found[n] for n in names if n in found]
        self.hosts += started  # stopped after the test, even when another failed to start
        if errors:
            raise errors[0]
        return started

    def keys(self) -> list[str]:
        with self.redis.client() as c:
            return sorted(c.scan_iter(match=f"{self.prefix}*", count=1000))

    def stop(self) -> list[int]:
        """Stop every host: the pids that had to be killed."""
        pids = [pid for h in self.hosts if not h.gone for pid in h.pids]
        killed = stop_pids(pids)  # all at once: each takes a moment to drain
        wait_gone(pids)
        return killed


#: ``make_cluster(n=3, store_url=None, deployment=None, **settings)``: the started cluster.
MakeCluster = Callable[..., Cluster]


@pytest.fixture(scope="session")
def cluster_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("cluster-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def cluster_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(the store URL, the streaming deployment's id)."""
    assert POSTGRES_ADMIN is not None
    with postgres_database(POSTGRES_ADMIN) as url:
        yield url, deploy(tmp_path_factory.mktemp("cluster-deployer"), url)


@pytest.fixture
def make_cluster(
    cluster_redis: RedisServer, cluster_store: tuple[str, str], tmp_path: Path
) -> Iterator[MakeCluster]:
    clusters: list[Cluster] = []
    with contextlib.ExitStack() as stack:

        def make(
            n: int = 3, store_url: str | None = None, deployment: str | None = None,
            **settings: str,
        ) -> Cluster:  # fmt: skip
            broker_url = stack.enter_context(cluster_redis.namespace())
            cluster = Cluster(
                cluster_redis, broker_url, store_url or cluster_store[0],
                deployment or cluster_store[1], tmp_path / f"cluster-{len(clusters)}",
                dict(settings),
            )  # fmt: skip
            clusters.append(cluster)
            cluster.start_many([f"h{i + 1}" for i in range(n)])
            return cluster

        try:
            yield make
        finally:
            killed = [pid for c in clusters for pid in c.stop()]
            # a test that killed the redis-server and failed before starting it again
            if cluster_redis.proc is not None and cluster_redis.proc.poll() is not None:
                cluster_redis.start()
    assert not killed, f"processes that ignored SIGTERM and were killed: {killed}"


@pytest.fixture
def cluster(make_cluster: MakeCluster) -> Cluster:
    """Three hosts h1, h2, h3 serving the streaming pipeline on one broker and one store."""
    return make_cluster()


# -- small helpers the tests share ----------------------------------------------------------------


def submit(url: str, params: dict[str, Any], **kw: Any) -> httpx.Response:
    """``POST /invoke?mode=async`` on a new connection (bounded by a timeout)."""
    with httpx.Client(base_url=url, timeout=kw.pop("timeout", 30)) as client:
        return client.post("/invoke?mode=async", json={"parameters": params, **kw})


def job_id_of(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id
