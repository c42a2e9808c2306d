"""Shared fixtures: an isolated ZSERVE_HOME, in-process apps, and real server processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def zhome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ZSERVE_HOME (embedded store, registry) for this test only."""
    home = tmp_path / "zhome"
    for var in list(os.environ):
        if var.startswith(("ZSERVE_", "ZENML_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("ZSERVE_HOME", str(home))
    return home


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    """Build an in-process TestClient for a pipeline source (no store involved)."""
    from fastapi.testclient import TestClient

    from zserve.engine.plan import compile_plan
    from zserve.records import DeploymentRecord
    from zserve.sdk.loader import load_pipeline
    from zserve.server.app import create_app
    from zserve.settings import Settings

    clients: list[TestClient] = []

    def build(source: str, **settings: Any) -> TestClient:
        loaded = load_pipeline(source, str(ROOT))
        plan = compile_plan(loaded.pipeline)
        record = DeploymentRecord(
            id="0123abcd-0000-4000-8000-000000000000",
            name=plan.name,
            version=1,
            source=loaded.source,
            import_root=loaded.import_root,
            pipeline_name=plan.name,
            code_hash="test",
            spec=plan.spec,
            created_at="2026-01-01T00:00:00+00:00",
        )
        client = TestClient(create_app(Settings(home="/nonexistent", **settings), record, plan))
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for c in clients:
        c.__exit__(None, None, None)


def cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real ``zserve`` command line in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "zserve", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=str(ROOT),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"zserve {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@dataclass
class ServerProcess:
    """A real ``python -m zserve.server.app`` process on a free port."""

    proc: subprocess.Popen[str]
    log: Path
    url: str = ""
    lines: list[str] = field(default_factory=list)

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_tree(self.proc.pid)
                self.proc.wait(5)
        return self.proc.returncode


def _kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for p in [*parent.children(recursive=True), parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


READY = re.compile(r"serving deployment \S+ \((\S+)\) at (http://\S+) with")


def start_server(
    env: dict[str, str], log: Path, *, wait: bool = True, deadline_s: float = 60
) -> ServerProcess:
    """Start a server from the environment alone, wait for its ready line and a 200 /health."""
    full_env = {**os.environ, "ZSERVE_PORT": "0", **env}
    fh = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zserve.server.app"],
        env=full_env,
        stdout=fh,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(ROOT),
        start_new_session=True,
    )
    server = ServerProcess(proc, log)
    if not wait:
        return server
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        match = READY.search(log.read_text())
        if match:
            server.url = match.group(2)
            try:
                if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"server not healthy within {deadline_s}s:\n{log.read_text()}")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start real servers; every one (and its workers) is gone after the test, or it fails."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str], **kw: Any) -> ServerProcess:
        server = start_server(env, tmp_path / f"server-{len(started)}.log", **kw)
        started.append(server)
        return server

    yield start
    leaked = []
    for server in started:
        children = []
        with contextlib.suppress(psutil.NoSuchProcess):
            children = psutil.Process(server.proc.pid).children(recursive=True)
        server.stop()
        for child in children:
            try:
                child.wait(10)
            except psutil.TimeoutExpired:
                leaked.append(child.pid)
                child.kill()
    assert not leaked, f"processes left behind: {leaked}"


@pytest.fixture
def deployed(zhome: Path) -> Callable[..., dict[str, Any]]:
    """Deploy a source through the real CLI and return the stored deployment (as JSON)."""
    import json

    def deploy(source: str, *extra: str) -> dict[str, Any]:
        proc = cli("deploy", source, "--json", *extra, env={**os.environ})
        doc: dict[str, Any] = json.loads(proc.stdout)["deployment"]
        return doc

    return deploy


@pytest.fixture
def started(zhome: Path) -> Iterator[list[dict[str, Any]]]:
    """Servers a test starts with `zserve start --detach --json` (it appends their documents);
    afterwards `zserve stop --all` must leave no process behind."""
    servers: list[dict[str, Any]] = []
    yield servers
    cli("stop", "--all", "--timeout", "10", check=False)
    pids = [pid for s in servers for pid in [s["pid"], *s["worker_pids"]]]
    leftovers = [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"
