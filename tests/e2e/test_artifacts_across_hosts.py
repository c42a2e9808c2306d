"""Two hosts (``zserve start``, each with a ZSERVE_HOME of its own: no shared file system) on one
PostgreSQL store: a large artifact recorded on one host downloads byte for byte from the other,
identical contents are kept once, and a store that stops answering is a 503 problem."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import make_url

from tests.e2e.conftest import cli, fresh, kill_tree, wait_for
from tests.e2e.tracking_helpers import POSTGRES_ADMIN, POSTGRES_URL_ENV, TcpProxy, Tracked
from tests.store.store_backends import postgres_database
from zserve.store.artifacts import INLINE_MAX_BYTES

pytestmark = pytest.mark.skipif(
    not POSTGRES_ADMIN, reason=f"{POSTGRES_URL_ENV} is not set: scripts/test starts PostgreSQL"
)

TRACKED = "tests.server.tracked:tracked"
SIZE = 40_000  # the report step's output: well over INLINE_MAX_BYTES of JSON


@pytest.fixture
def store_url(zhome: Path) -> Iterator[str]:
    """A PostgreSQL database of this test's own (asked for after ``zhome``: dropped after the
    hosts have stopped)."""
    assert POSTGRES_ADMIN is not None
    with postgres_database(POSTGRES_ADMIN) as url:
        yield url


class Hosts:
    """``zserve start --detach`` hosts, each with a ZSERVE_HOME of its own; all stopped after."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.homes: list[Path] = []
        self.docs: list[dict[str, Any]] = []

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        return {**os.environ, "ZSERVE_HOME": str(home), **extra}

    def start(self, deployment: str, store_url: str) -> dict[str, Any]:
        home = self.tmp_path / f"host-{len(self.homes) + 1}"
        self.homes.append(home)
        proc = cli(
            "start", "-d", deployment, "--port", "0", "--detach", "--json",
            "--capture-default", "full", "--host-id", home.name,
            env=self.env(home, ZSERVE_STORE_URL=store_url),
        )  # fmt: skip
        doc: dict[str, Any] = json.loads(proc.stdout)
        self.docs.append(doc)
        return doc

    def stop_all(self) -> None:
        for home in self.homes:
            cli("stop", "--all", "--timeout", "10", env=self.env(home), check=False)
        pids = [pid for doc in self.docs for pid in [doc["pid"], *doc["worker_pids"]]]
        left = [
            pid
            for pid in pids
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        for pid in left:
            kill_tree(pid)
        assert not left, f"processes left behind: {left}"


@pytest.fixture
def hosts(store_url: str, tmp_path: Path) -> Iterator[Hosts]:
    started = Hosts(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def _invoke(url: str, **params: Any) -> dict[str, Any]:
    answer = fresh(url, "POST", "/invoke", json={"parameters": params})
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    assert doc["run_id"], doc
    return doc


def _report_artifact(url: str, run_id: str) -> dict[str, Any]:
    run = fresh(url, "GET", f"/runs/{run_id}").json()
    artifact: dict[str, Any] = run["steps"][2]["outputs"]["output"]
    return artifact


def _deploy(hosts: Hosts, store_url: str) -> str:
    """``zserve db upgrade`` then ``zserve deploy`` from a machine of its own: the id."""
    env = hosts.env(hosts.tmp_path / "deployer", ZSERVE_STORE_URL=store_url)
    cli("db", "upgrade", env=env)
    doc = json.loads(cli("deploy", TRACKED, "--json", env=env).stdout)
    return str(doc["deployment"]["id"])


def test_a_large_artifact_made_on_one_host_downloads_byte_identical_from_another(
    hosts: Hosts, store_url: str
) -> None:
    deployment = _deploy(hosts, store_url)
    one = hosts.start(deployment, store_url)["url"]
    two = hosts.start(deployment, store_url)["url"]

    made = _invoke(one, size=SIZE)
    on_one = _report_artifact(one, made["run_id"])
    on_two = _report_artifact(two, made["run_id"])
    assert on_two == on_one and on_one["size"] > INLINE_MAX_BYTES
    assert "value" not in on_two  # too big to be inlined: downloaded on its own

    path = f"/runs/{made['run_id']}/artifacts/{on_one['artifact_id']}"
    from_one = fresh(one, "GET", path)
    from_two = fresh(two, "GET", path)
    assert from_two.status_code == 200, from_two.text
    assert from_two.content == from_one.content
    assert hashlib.sha256(from_two.content).hexdigest() == on_one["sha256"]
    assert len(from_two.content) == on_one["size"]
    assert json.loads(from_two.content)["padding"] == "x" * SIZE
    print(f"\nartifact of {len(from_two.content)} bytes made on host 1, read from host 2")

    # The same output made on host 2 is kept once; no host wrote a file of its own.
    again = _invoke(two, size=SIZE)
    assert _report_artifact(two, again["run_id"])["sha256"] == on_one["sha256"]
    for home in hosts.homes:  # contents(): the blobs, after checking the host has no files
        store = Tracked(store_url, home / "artifacts", hosts.start)
        assert store.contents() == [on_one["sha256"]]
    assert store.rows("SELECT count(*) FROM artifacts WHERE blob IS NOT NULL") == [(2,)]


def test_an_artifact_read_while_postgresql_is_unreachable_is_a_503_problem(
    hosts: Hosts, store_url: str
) -> None:
    deployment = _deploy(hosts, store_url)
    one = hosts.start(deployment, store_url)["url"]
    made = _invoke(one, size=SIZE)
    artifact = _report_artifact(one, made["run_id"])

    real = make_url(store_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    proxy.start()
    via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        two = hosts.start(deployment, via_proxy)["url"]
        path = f"/runs/{made['run_id']}/artifacts/{artifact['artifact_id']}"
        assert fresh(two, "GET", path).status_code == 200
        proxy.cut()
        refused = fresh(two, "GET", path)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith("/store-unavailable")
        assert "Traceback" not in refused.text
        proxy.start()
        back = wait_for(
            lambda: (r := fresh(two, "GET", path)).status_code == 200 and r, "recovery", 20
        )
        assert hashlib.sha256(back.content).hexdigest() == artifact["sha256"]
    finally:
        proxy.cut()
