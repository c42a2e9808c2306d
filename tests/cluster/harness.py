"""Real services for the many-host tests: a redis-server of the test's own (its AOF written on
every command, so it can be killed with SIGKILL and started again from it), a PostgreSQL cluster
of the test's own (to restart it), and zserve hosts started by ``zserve start --detach``, each
with its own ZSERVE_HOME, sharing one broker and one store.

Every process started here is stopped by whoever started it (SIGTERM, a wait, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from tests.e2e.conftest import cli, kill_tree, wait_for

REDIS_SERVER = shutil.which("redis-server")
#: The deployment every cluster test serves: async steps whose pace the parameters set.
STREAMING = "zserve.examples.streaming:streaming_pipeline"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_pids(pids: list[int], timeout: float = 15) -> list[int]:
    """SIGTERM each of ``pids``, wait up to ``timeout`` s, SIGKILL what is left: those pids."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


# -- redis-server ---------------------------------------------------------------------------------


class RedisServer:
    """A redis-server on a free port with its data in ``directory``: ``appendonly yes``,
    ``appendfsync always`` (a write it acknowledged survives SIGKILL), ``noeviction``, no RDB
    snapshots. ``kill()`` is ``kill -9``; ``start()`` again replays the AOF on the same port."""

    def __init__(self, directory: Path) -> None:
        assert REDIS_SERVER is not None
        self.directory = directory
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "redis.conf").write_text(
            "bind 127.0.0.1\n"
            f"port {self.port}\n"
            f"requirepass {self.password}\n"
            f'dir "{directory}"\n'
            "appendonly yes\nappendfsync always\n"
            'save ""\n'
            "maxmemory-policy noeviction\n"
            f'logfile "{directory / "redis.log"}"\n'
        )

    def start(self, deadline_s: float = 30) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            [str(REDIS_SERVER), str(self.directory / "redis.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log()[-2000:]}")
            try:
                with self.client() as c:
                    return bool(c.ping())
            except redis.exceptions.RedisError:  # not yet listening, or loading its AOF
                return False

        wait_for(answers, "redis-server to answer PING", deadline_s)

    def kill(self) -> None:
        """``kill -9``: no chance to write anything more."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_pids([self.proc.pid], timeout=15)
            self.proc.wait(5)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @contextlib.contextmanager
    def namespace(self) -> Iterator[str]:
        """The broker URL with a key prefix of its own; its keys are deleted on exit."""
        prefix = f"zc-{secrets.token_hex(6)}:"
        try:
            yield f"{self.url}?prefix={prefix}"
        finally:
            with contextlib.suppress(redis.exceptions.RedisError), self.client() as c:
                keys = list(c.scan_iter(match=f"{prefix}*", count=1000))
                if keys:
                    c.delete(*keys)


# -- PostgreSQL, a cluster of the test's own ----------------------------------------------------


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off PATH), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts[-3])
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def own_postgres_problem() -> str | None:
    """Why this machine cannot run a PostgreSQL cluster of a test's own, or None."""
    if pg_bin() is None:
        return "PostgreSQL's initdb and pg_ctl are not installed"
    if os.geteuid() == 0:  # initdb refuses root: the cluster runs as postgres
        if shutil.which("runuser") is None:
            return "runuser is missing (the tests run as root; PostgreSQL runs as postgres)"
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "there is no postgres user to run PostgreSQL as (the tests run as root)"
    return None


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb) on 127.0.0.1 and a free port, that the test may
    stop, start and restart (as scripts/test-services makes one: run as ``postgres`` when the
    tests run as root, since initdb refuses root)."""

    USER = "zserve"

    def __init__(self) -> None:
        bindir = pg_bin()
        assert bindir is not None
        self.bin = bindir
        self.owner = "postgres" if os.geteuid() == 0 else None
        # not under pytest's tmp_path: the server's own user must reach it
        self.directory = Path(tempfile.mkdtemp(prefix="zserve-cluster-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.url = (
            f"postgresql+psycopg://{self.USER}:{self.password}@127.0.0.1:{self.port}/postgres"
        )
        if self.owner is not None:
            shutil.chown(self.directory, self.owner)
        self.directory.chmod(0o700)

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = list(args)
        if self.owner is not None:
            cmd = ["runuser", "-u", self.owner, "--", *cmd]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr}")

    def init(self) -> None:
        pwfile = self.directory / "pw"
        pwfile.write_text(self.password)
        if self.owner is not None:
            shutil.chown(pwfile, self.owner)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "--no-sync", "-U", self.USER,
            f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--locale=C",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.directory}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.directory / "server.log"), "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: every session is cut, as when PostgreSQL is restarted."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


# -- zserve hosts ---------------------------------------------------------------------------------


def host_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a host: the test's, without its ZSERVE_ settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSERVE_", "ZENML_"))}
    return {**env, "ZSERVE_HOME": str(home), "PYTHONUNBUFFERED": "1", **settings}


@dataclass
class Host:
    """One zserve host (``zserve start --detach``): a server process and its one worker."""

    name: str
    home: Path
    env: dict[str, str]
    doc: dict[str, Any] = field(default_factory=dict)
    #: killed or stopped already (its pids may belong to other processes by now)
    gone: bool = False

    @property
    def url(self) -> str:
        return str(self.doc["url"])

    @property
    def pids(self) -> list[int]:
        return list(dict.fromkeys([self.doc["pid"], *self.doc["worker_pids"]]))

    def log(self) -> str:
        path = Path(self.doc.get("log_file", "/nonexistent"))
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the host's every process, as a machine that dies."""
        for pid in self.pids:
            kill_tree(pid)
        psutil.wait_procs([p for p in map(_process, self.pids) if p is not None], timeout=10)
        self.gone = True

    def terminate(self) -> None:
        """SIGTERM the server process: it drains, then exits."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.doc["pid"], signal.SIGTERM)

    def stop(self, timeout: float = 15) -> list[int]:
        """Stop it (SIGTERM, a wait, SIGKILL): the pids that had to be killed."""
        if self.gone or not self.doc:
            return []
        killed = stop_pids(self.pids, timeout)
        self.gone = True
        return killed


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def start_host(
    name: str, home: Path, deployment: str, broker_url: str, store_url: str, **settings: str
) -> Host:
    """``zserve start --detach`` one host (one worker, a free port, ``--host-id NAME``)."""
    env = host_env(home, ZSERVE_BROKER_URL=broker_url, ZSERVE_STORE_URL=store_url, **settings)
    host = Host(name, home, env)
    proc = cli(
        "start", "--deployment", deployment, "--port", "0", "--workers", "1",
        "--host-id", name, "--detach", "--json", env=env, timeout=120,
    )  # fmt: skip
    host.doc = json.loads(proc.stdout)
    return host


def deploy(home: Path, store_url: str, source: str = STREAMING, name: str = "streamer") -> str:
    """Deploy ``source`` into the shared store once: its deployment id."""
    env = host_env(home, ZSERVE_STORE_URL=store_url)
    doc = json.loads(cli("deploy", source, "--name", name, "--json", env=env).stdout)
    return str(doc["deployment"]["id"])


def wait_gone(pids: list[int], timeout: float = 10) -> None:
    """Wait until none of ``pids`` runs (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and _status(p) != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes still running: {pids}")


def _status(pid: int) -> str | None:
    try:
        status: str = psutil.Process(pid).status()
        return status
    except psutil.NoSuchProcess:
        return None
