"""Real processes for the end-to-end tests, and the helpers that talk to them: the ``zserve``
command line, servers (started from the environment, or with ``zserve start --detach``), and
waiting for a condition, a job's status, or a job's event stream.

Every process a fixture starts is stopped after the test (SIGTERM, a wait, then SIGKILL), and a
process left behind fails the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from httpx_sse import connect_sse

from tests.conftest import ROOT
from tests.e2e.tracking_helpers import BACKENDS, POSTGRES_ADMIN, POSTGRES_URL_ENV, Tracked
from tests.store.store_backends import postgres_database


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


def wait_for(
    predicate: Callable[[], Any], what: str, deadline_s: float = 30, every: float = 0.05
) -> Any:
    """Call ``predicate`` every ``every`` seconds until it returns something true: that value."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


def forget_snapshot(home: Path, deployment_id: str) -> None:
    """Make a stored deployment look like one made before snapshots (no code archive), as a
    store upgraded from an older zserve holds them."""
    conn = sqlite3.connect(home / "zserve.db")
    try:
        with conn:
            found = conn.execute(
                "UPDATE deployments SET code_archive = NULL, environment = NULL WHERE id = ?",
                (deployment_id,),
            ).rowcount
    finally:
        conn.close()
    assert found == 1


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on, for as long as the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


# -- servers started from the environment (python -m zserve.server.app) -----------------------


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
                kill_tree(self.proc.pid)
                self.proc.wait(5)
        return self.proc.returncode


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for p in [*parent.children(recursive=True), parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


#: The ``serve`` fixture: deploy a source, start a server for it, wait until it is healthy.
Serve = Callable[..., ServerProcess]
#: The ``detached`` fixture: ``zserve start --detach`` with these arguments, its JSON document.
Detached = Callable[..., dict[str, Any]]

READY = re.compile(r"serving deployment \S+ \((\S+)\) at (http://\S+) with")


def start_server(
    env: dict[str, str],
    log: Path,
    *,
    wait: bool = True,
    deadline_s: float = 60,
    argv: tuple[str, ...] = ("-m", "zserve.server.app"),
) -> ServerProcess:
    """Start a server from the environment alone, wait for its ready line and a 200 /health.
    ``argv``: what follows ``python`` (another way in to ``zserve.server.boot.main``)."""
    full_env = {**os.environ, "ZSERVE_PORT": "0", **env}
    fh = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, *argv],
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

    def healthy_url() -> str | None:
        match = READY.search(log.read_text())
        if match:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(match.group(2) + "/health", timeout=2).status_code == 200:
                    return match.group(2)
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}")
        return None

    try:
        server.url = wait_for(healthy_url, "its ready line and a 200 /health", deadline_s)
    except AssertionError as exc:
        server.stop()
        raise AssertionError(f"{exc}:\n{log.read_text()}") from None
    return server


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

    def deploy(source: str, *extra: str) -> dict[str, Any]:
        proc = cli("deploy", source, "--json", *extra, env={**os.environ})
        doc: dict[str, Any] = json.loads(proc.stdout)["deployment"]
        return doc

    return deploy


@pytest.fixture
def serve(deployed: Callable[..., dict[str, Any]], servers: Callable[..., ServerProcess]) -> Serve:
    """Deploy a source and serve it (``workers`` processes; ``env`` adds settings), healthy."""

    def start(source: str, workers: int = 1, **env: str) -> ServerProcess:
        deployment = deployed(source)
        return servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"],
                        "ZSERVE_WORKERS": str(workers), **env})  # fmt: skip

    return start


# -- servers started by the command line (zserve start --detach) ------------------------------


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


@pytest.fixture
def detached(started: list[dict[str, Any]]) -> Detached:
    """``zserve start --port 0 --detach --json ARGS``: the server's document, added to
    ``started`` (so that it is stopped, and checked gone, after the test)."""

    def start(*args: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            cli("start", "--port", "0", "--detach", "--json", *args).stdout
        )
        started.append(doc)
        return doc

    return start


# -- command lines that keep running ------------------------------------------------------------


class Running:
    """A CLI subprocess whose stdout lines are read as they come."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zserve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def wait_line(self, pattern: str, deadline_s: float = 30) -> str:
        deadline = time.monotonic() + deadline_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; got {self.lines}")

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Exit code and stderr (the rest of stdout goes to ``lines``)."""
        code = self.proc.wait(timeout)
        assert self.proc.stderr is not None
        stderr = self.proc.stderr.read()
        while (line := self.queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code, stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def running() -> Iterator[Callable[..., Running]]:
    """Start ``zserve ARGS`` in the background; still running after the test, it is killed."""
    procs: list[Running] = []

    def run(*args: str) -> Running:
        procs.append(Running(*args))
        return procs[-1]

    yield run
    for p in procs:
        p.kill()


# -- jobs over HTTP -----------------------------------------------------------------------------


def fresh(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a new connection, so the kernel may hand it to either worker."""
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.request(method, path, **kw)


def wait_status(url: str, job_id: str, *statuses: str, deadline_s: float = 30) -> dict[str, Any]:
    """Poll ``GET /jobs/{job_id}`` until the job has one of ``statuses``: its document."""
    docs: list[dict[str, Any]] = []

    def reached() -> bool:
        docs.append(httpx.get(f"{url}/jobs/{job_id}").json())
        return docs[-1]["status"] in statuses

    try:
        wait_for(reached, f"job {job_id}", deadline_s, every=0.02)
    except AssertionError:
        raise AssertionError(f"job {job_id} never reached {statuses}: {docs[-1:]}") from None
    return docs[-1]


def sse_events(url: str, job_id: str, last_event_id: int | None = None) -> list[dict[str, Any]]:
    """Every event of ``GET /stream/{job_id}`` (after ``last_event_id``) until the stream ends;
    each SSE frame's ``event`` and ``id`` must agree with its JSON data."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    found = []
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, "GET", f"{url}/stream/{job_id}", headers=headers) as source,
    ):
        for sse in source.iter_sse():
            doc = json.loads(sse.data)
            assert sse.event == doc["event"] and int(sse.id) == doc["seq"]
            found.append(doc)
    return found


# -- tracked mode: servers on a fresh store, SQLite or PostgreSQL -----------------------------


@pytest.fixture(params=BACKENDS)
def tracked(
    request: pytest.FixtureRequest,
    zhome: Path,
    servers: Callable[..., ServerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Tracked]:
    """Deploy and serve pipelines on a fresh store: ``tracked.start(source, **env)``."""
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            admin = POSTGRES_ADMIN
            if not admin:
                pytest.skip(f"{POSTGRES_URL_ENV} is not set: scripts/test starts PostgreSQL")
            url = stack.enter_context(postgres_database(admin))
            monkeypatch.setenv("ZSERVE_STORE_URL", url)
        else:
            url = f"sqlite:///{zhome}/zserve.db"
        artifacts = zhome / "artifacts"

        def start(source: str, **env: str) -> ServerProcess:
            doc = cli("deploy", source, "--json", env={**os.environ})
            deployment = json.loads(doc.stdout)["deployment"]["id"]
            return servers({"ZSERVE_DEPLOYMENT_ID": deployment, **env})

        yield Tracked(url, artifacts, start)
