"""``zserve start --broker URL --store URL`` on real servers: the flags beat the environment for
the server and every worker, detached and in the foreground; a host starts a deployment by id
from a PostgreSQL store it shares, with no code of its own; and ``ZSERVE_STORE_MIGRATE=never``
refuses a store that is behind (exit 3, the store left as it is) and serves one at head.

Redis (``ZSERVE_TEST_REDIS_URL``) and PostgreSQL (``ZSERVE_TEST_POSTGRES_URL``) come from
``scripts/test-services``; without them those tests skip."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.broker.conftest import REDIS_MARKS, redis_namespace, redis_url
from tests.e2e.conftest import (
    Detached,
    Running,
    ServerProcess,
    cli,
    fresh,
    sse_events,
    wait_for,
)
from tests.e2e.tracking_helpers import POSTGRES_ADMIN, POSTGRES_URL_ENV, sqlite_rows
from tests.store.store_backends import postgres_database
from zserve.broker.redis import split_url
from zserve.settings import hide_password
from zserve.store.schema import SCHEMA_HEAD, alembic_config

#: read when the module is imported: the ``zhome`` fixture clears every ZSERVE_ variable
REDIS_URL = redis_url()
STREAMING = "zserve.examples.streaming:streaming_pipeline"
WEATHER = "zserve.examples.weather:weather_pipeline"
POSTGRES_MARKS = [
    pytest.mark.postgresql,
    pytest.mark.skipif(not POSTGRES_ADMIN, reason=f"{POSTGRES_URL_ENV} is not set: scripts/test"),
]
FLOW = "from zserve import pipeline\n\n\n@pipeline\ndef flow(x: int) -> int:\n    return x * 3\n"


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def ps() -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = json.loads(cli("ps", "--json").stdout)["servers"]
    return servers


@pytest.fixture
def namespaced_redis() -> Iterator[str]:
    """A Redis URL with a key prefix of its own, its keys deleted after the test. (Asked for
    before ``detached``, so that they are deleted after the servers stopped.)"""
    assert REDIS_URL is not None
    with redis_namespace(REDIS_URL) as url:
        yield url


def marked(marks: list[pytest.MarkDecorator]) -> Callable[[Any], Any]:
    def apply(test: Any) -> Any:
        for mark in marks:
            test = mark(test)
        return test

    return apply


@marked(REDIS_MARKS)
def test_detached_workers_use_the_broker_and_store_of_the_flags_not_the_environment(
    namespaced_redis: str,
    zhome: Path,
    tmp_path: Path,
    detached: Detached,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "shared" / "zserve.db"
    store_url = f"sqlite:///{elsewhere}"
    made = json.loads(
        cli("deploy", STREAMING, "--name", "streamer", "--json",
            env={**os.environ, "ZSERVE_STORE_URL": store_url}).stdout
    )["deployment"]  # fmt: skip
    # the environment names another broker and another store: the flags win
    not_this = tmp_path / "not-this.db"
    monkeypatch.setenv("ZSERVE_BROKER_URL", "memory://")
    monkeypatch.setenv("ZSERVE_STORE_URL", f"sqlite:///{not_this}")

    doc = detached("--deployment", made["id"], "--workers", "2", "--broker", namespaced_redis,
                   "--store", str(elsewhere))  # fmt: skip
    url = doc["url"]
    status = fresh(url, "GET", "/status").json()
    assert status["broker"] == {
        "kind": "redis", "url": hide_password(namespaced_redis), "reachable": True,
        "problem": None,
    }  # fmt: skip
    assert status["store"] == {"kind": "sqlite", "url": store_url, "reachable": True,
                               "problem": None}  # fmt: skip

    # async jobs go through Redis, whichever worker answers; a tracked run lands in the store
    pids, job_ids = set(), []
    for _ in range(6):
        response = fresh(url, "POST", "/invoke?mode=async",
                         json={"parameters": {"words": 3, "delay": 0.01}})  # fmt: skip
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["job_id"])
        events = sse_events(url, job_ids[-1])
        assert events[-1]["event"] == "job.completed"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        pids.add(fresh(url, "GET", "/status").json()["pid"])
        tracked = fresh(url, "POST", "/invoke", json={
            "parameters": {"words": 2, "delay": 0.0}, "capture_override": {"mode": "full"},
        }).json()  # fmt: skip
        assert tracked["success"] is True and tracked["run_id"], tracked
        pids.add(fresh(url, "GET", "/status").json()["pid"])
    print(f"workers that answered: {len(pids)} of 2")
    client_url, prefix = split_url(namespaced_redis)
    with redis.Redis.from_url(client_url) as client:
        assert client.zcard(f"{prefix}jobs") == 6
        assert all(client.exists(f"{prefix}job:{job_id}") for job_id in job_ids)
    runs = sqlite_rows(store_url, "SELECT COUNT(*) FROM runs")
    assert runs == [(6,)]
    assert not not_this.exists()

    # the password of a URL is never shown: not by /status, `zserve ps`, nor the server's log
    password = urlsplit(namespaced_redis).password
    assert password
    shown = [json.dumps(status), cli("ps", "--json").stdout, Path(doc["log_file"]).read_text()]
    assert not [text for text in shown if password in text]


@marked(POSTGRES_MARKS)
def test_a_host_serves_a_deployment_by_id_from_a_shared_postgresql_store_in_the_foreground(
    zhome: Path, tmp_path: Path, running: Callable[..., Running]
) -> None:
    assert POSTGRES_ADMIN is not None
    with postgres_database(POSTGRES_ADMIN) as store_url:
        # host A deploys code of its own into the shared store...
        source = tmp_path / "src" / "flow.py"
        source.parent.mkdir()
        source.write_text(FLOW)
        host_a = {**os.environ, "ZSERVE_HOME": str(tmp_path / "host-a"),
                  "ZSERVE_STORE_URL": store_url}  # fmt: skip
        made = json.loads(cli("deploy", f"{source}:flow", "--json", env=host_a).stdout)
        deployment_id = made["deployment"]["id"]
        shutil.rmtree(source.parent)  # ...which now lives in the store alone
        # host B (this test's ZSERVE_HOME, whose own store is empty) serves it by id
        server = running("start", "--deployment", deployment_id, "--port", "0", "--workers",
                         "2", "--store", store_url)  # fmt: skip
        try:
            (row,) = wait_for(
                lambda: [r for r in ps() if r["status"] == "healthy"],
                "the foreground server in `zserve ps`", 60, every=0.1,
            )  # fmt: skip
            assert row["pid"] == server.proc.pid and row["deployment_id"] == deployment_id
            url = row["url"]
            answer = httpx.post(url + "/invoke", json={"parameters": {"x": 5}}).json()
            assert answer["outputs"] == {"output": 15}
            tracked = httpx.post(url + "/invoke", json={
                "parameters": {"x": 2}, "capture_override": {"mode": "metadata"},
            }).json()  # fmt: skip
            assert tracked["run_id"]
            assert rows(store_url, "SELECT id FROM runs") == [(tracked["run_id"],)]
            status = httpx.get(url + "/status").json()
            assert status["store"] == {"kind": "postgresql", "url": hide_password(store_url),
                                       "reachable": True, "problem": None}  # fmt: skip
            assert ":***@" in status["store"]["url"]
            assert not (zhome / "zserve.db").exists()  # this host's own store was never made
            server.proc.send_signal(signal.SIGINT)
            code, stderr = server.finish()
            assert code == 0, stderr
            assert urlsplit(store_url).password not in stderr
        finally:
            server.kill()  # before the database is dropped


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=POSTGRES_MARKS)],
)
def old_store(request: pytest.FixtureRequest, zhome: Path, tmp_path: Path) -> Iterator[str]:
    """A store an older zserve left (schema revision 0002); asked for before ``detached``, so
    that its database is dropped after the servers stopped."""
    if request.param == "sqlite":
        (tmp_path / "old").mkdir()
        url = f"sqlite:///{tmp_path}/old/zserve.db"
        command.upgrade(alembic_config(url), "0002")
        yield url
        return
    assert POSTGRES_ADMIN is not None
    with postgres_database(POSTGRES_ADMIN) as url:
        command.upgrade(alembic_config(url), "0002")
        yield url


def test_store_migrate_never_refuses_a_store_behind_and_serves_one_at_head(
    old_store: str,
    detached: Detached,
    servers: Callable[..., ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZSERVE_STORE_MIGRATE", "never")
    refused = (
        f"Error: The store at {hide_password(old_store)} is at schema revision 0002, behind "
        f"this zserve's {SCHEMA_HEAD}, and ZSERVE_STORE_MIGRATE=never: run `zserve db upgrade` "
        "(with --store URL, or ZSERVE_STORE_URL set) first\n"
    )
    for extra in ([], ["--detach"]):  # foreground and detached
        result = cli("start", "-d", "weather", "--port", "0", "--store", old_store, *extra,
                     check=False)  # fmt: skip
        assert (result.returncode, result.stderr) == (3, refused)
        assert rows(old_store, "SELECT version_num FROM alembic_version") == [("0002",)]
    assert ps() == []
    # a server started from the environment alone refuses it too, as does `zserve deploy`
    from_env = servers({"ZSERVE_DEPLOYMENT_ID": "weather", "ZSERVE_STORE_URL": old_store},
                       wait=False)  # fmt: skip
    assert from_env.proc.wait(60) == 3
    assert refused in from_env.output()
    on_old = {**os.environ, "ZSERVE_STORE_URL": old_store}
    deploy = cli("deploy", WEATHER, "--name", "weather", env=on_old, check=False)
    assert (deploy.returncode, deploy.stderr) == (3, refused)
    assert rows(old_store, "SELECT version_num FROM alembic_version") == [("0002",)]

    # migrated explicitly, it is served
    upgraded = json.loads(cli("db", "upgrade", "--store", old_store, "--json").stdout)
    assert (upgraded["before"], upgraded["after"]) == ("0002", SCHEMA_HEAD)
    cli("deploy", WEATHER, "--name", "weather", env=on_old)
    doc = detached("--deployment", "weather", "--store", old_store)
    answer = fresh(doc["url"], "POST", "/invoke", json={"parameters": {"city": "Oslo"}})
    assert answer.status_code == 200, answer.text
    status = fresh(doc["url"], "GET", "/status").json()
    assert status["store"]["url"] == hide_password(old_store)
    assert status["store"]["reachable"] is True
