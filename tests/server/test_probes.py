"""``GET /livez`` and ``GET /readyz`` (in-process): answered from the worker's own state while it
starts, serves, drains or has failed, without an auth key and for any Host; and what
``/status`` says of the host, its broker and its store."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import resource_pipelines as rp
from tests.e2e.conftest import wait_for
from zserve.store.revision import upgrade

WEATHER = "zserve.examples.weather:weather_pipeline"
KEY = "k" * 32


@pytest.fixture(autouse=True)
def gate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A resource build of ``tests.resource_pipelines`` never left waiting after a test."""
    monkeypatch.setenv(rp.LOG_ENV, str(tmp_path / "resource.log"))
    monkeypatch.delenv(rp.FAIL_ENV, raising=False)
    yield
    if rp.GATE is not None:
        rp.GATE.set()
    rp.GATE = None


def test_a_ready_worker_is_alive_and_ready(make_client: Callable[..., Any]) -> None:
    client = make_client(WEATHER)
    live = client.get("/livez")
    assert live.status_code == 200
    assert live.headers["content-type"] == "application/json"
    assert live.json() == {"status": "alive", "host_id": f"{socket.gethostname()}:8001",
                           "pid": os.getpid()}  # fmt: skip
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "host_id": f"{socket.gethostname()}:8001"}
    head = client.head("/readyz")
    assert head.status_code == 200 and head.content == b""
    assert client.head("/livez").status_code == 200


def test_while_resources_build_a_worker_is_alive_not_ready(
    make_client: Callable[..., Any],
) -> None:
    rp.GATE = threading.Event()
    client = make_client("tests.resource_pipelines:counted", host_id="web-1")
    service = client.app.state.service
    wait_for(lambda: service.starting and service.worker.states() == {"load_counted": "building"},
             "the build to begin")  # fmt: skip
    assert client.get("/livez").json()["status"] == "alive"
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "starting", "host_id": "web-1"}
    assert client.get("/health").json()["status"] == "starting"  # /health as before
    rp.GATE.set()
    wait_for(lambda: client.get("/readyz").status_code == 200, "a 200 /readyz")
    assert client.get("/readyz").json() == {"status": "ready", "host_id": "web-1"}


def test_a_failed_resource_is_alive_not_ready(
    make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rp.FAIL_ENV, "weights.bin not found")
    client = make_client("tests.resource_pipelines:counted")
    ready = wait_for(
        lambda: (r := client.get("/readyz")).json()["status"] == "failed" and r, "failed"
    )
    assert ready.status_code == 503
    assert client.get("/livez").status_code == 200


def test_a_draining_worker_is_alive_not_ready(make_client: Callable[..., Any]) -> None:
    client = make_client(WEATHER)
    service = client.app.state.service
    service.ready, service.draining = False, True  # as the SIGTERM handler sets them
    try:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert client.get("/livez").status_code == 200
        assert client.get("/health").json()["status"] == "draining"
    finally:
        service.ready, service.draining = True, False


def test_the_probes_need_no_key_and_answer_any_host(make_client: Callable[..., Any]) -> None:
    client = make_client(WEATHER, auth_key=KEY)
    foreign = {"host": "kubelet.internal:8001"}
    for path in ("/livez", "/readyz", "/health"):
        assert client.get(path).status_code == 200, path
        assert client.get(path, headers=foreign).status_code == 200, path
        assert client.get(path, headers={"authorization": "Bearer wrong"}).status_code == 200
    assert client.get("/status").status_code == 401  # the rest still needs the key
    assert client.get("/status", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    refused = client.get("/status", headers={**foreign, "authorization": f"Bearer {KEY}"})
    assert refused.status_code == 400  # and a Host the server answers to


def test_the_probes_are_documented(make_client: Callable[..., Any]) -> None:
    paths = make_client(WEATHER).get("/openapi.json").json()["paths"]
    assert set(paths["/livez"]["get"]["responses"]) == {"200"}
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}


def test_status_names_the_host_and_says_the_broker_and_store_answer(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/zserve.db"
    upgrade(url)
    client = make_client(WEATHER, host_id="web-2", store_url=url)
    status = client.get("/status").json()
    assert status["host_id"] == "web-2"
    assert status["broker"] == {
        "kind": "memory", "url": "memory://", "reachable": True, "problem": None,
    }  # fmt: skip
    assert status["store"] == {"kind": "sqlite", "url": url, "reachable": True, "problem": None}


def test_a_store_that_is_not_there_is_unreachable_and_not_made(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    missing = tmp_path / "gone" / "zserve.db"
    client = make_client(WEATHER, store_url=f"sqlite:///{missing}")
    store = client.get("/status").json()["store"]
    assert store["kind"] == "sqlite" and store["reachable"] is False
    assert f"{missing} does not exist" in store["problem"]
    assert not missing.parent.exists()


def test_a_recording_worker_reports_its_writers_verdict(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    """With tracked capture the run writer checks the store itself: /status says what it
    found, and follows it when the store stops working."""
    db = tmp_path / "home" / "zserve.db"
    client = make_client(
        "tests.server.tracked:tracked", store_url=f"sqlite:///{db}",
        capture_default="metadata", artifact_dir=str(tmp_path / "artifacts"),
    )  # fmt: skip
    writer = client.app.state.service.writer
    wait_for(lambda: writer.checked, "the writer's first check")
    assert client.get("/status").json()["store"]["reachable"] is True
    db.unlink()  # the file the writer opened is gone: its next check (a write) says so

    def unreachable() -> dict[str, Any] | None:
        client.post("/invoke", json={"parameters": {"city": "Paris"}})
        store: dict[str, Any] = client.get("/status").json()["store"]
        return store if store["reachable"] is False else None

    store = wait_for(unreachable, "/status to see the store gone")
    assert "was deleted" in store["problem"]
    assert client.get("/health").json()["problems"]["store"] == store["problem"]
