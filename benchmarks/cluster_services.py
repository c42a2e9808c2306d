"""What ``benchmarks/cluster.py`` starts, and stops again whatever happens (Ctrl-C included): a
redis-server of its own in a temporary directory, and zserve hosts (``zserve start --detach``,
one worker each, a ZSERVE_HOME each) sharing one SQLite store file and, for the cluster, that
Redis."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zserve.registry import stop_tree

ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """The benchmark cannot give a meaningful answer; the message says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """redis-server on 127.0.0.1 and a free port, with a password, the settings the README
    asks for (``appendonly yes``, ``maxmemory-policy noeviction``; ``appendfsync everysec``,
    Redis's default) and no RDB snapshots; its data in ``directory``."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\n"
            f'dir "{self.directory}"\nappendonly yes\nappendfsync everysec\nsave ""\n'
            f'maxmemory-policy noeviction\nlogfile "{self.directory / "redis.log"}"\n'
        )
        self.proc = subprocess.Popen(
            [self.binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited {self.proc.returncode}")
            with contextlib.suppress(redis.exceptions.RedisError), self.client() as c:
                if c.ping():
                    return
            time.sleep(0.05)
        raise BenchError("redis-server did not answer PING within 30 s")

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_tree(self.proc.pid, timeout=15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)


def zserve(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "zserve", *args],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise BenchError(f"`zserve {' '.join(args)}` exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def base_env(home: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSERVE_", "ZENML_"))}
    # the hosts run with -P (no working directory on sys.path): this checkout's zserve
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, "ZSERVE_HOME": str(home), **settings}


@dataclass
class Hosts:
    """The hosts started so far (stopped together by ``stop``)."""

    directory: Path
    store_url: str
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def deploy(self, source: str, name: str) -> None:
        env = base_env(self.directory / "deployer", ZSERVE_STORE_URL=self.store_url)
        zserve(env, "deploy", source, "--name", name)

    def start(self, name: str, deployment: str, **settings: str) -> str:
        """Start host ``name`` (one worker, a free port): its URL."""
        env = base_env(self.directory / name, ZSERVE_STORE_URL=self.store_url, **settings)
        doc = json.loads(
            zserve(
                env,
                "start",
                "--deployment",
                deployment,
                "--port",
                "0",
                "--workers",
                "1",
                "--host-id",
                name,
                "--detach",
                "--json",
            )
        )
        self.docs[name] = doc
        return str(doc["url"])

    def stop(self) -> None:
        """SIGTERM every host, give them 15 s, SIGKILL what is left."""
        for doc in self.docs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(doc["pid"], 15)
        for doc in self.docs.values():
            stop_tree(doc["pid"], timeout=15)
        self.docs.clear()
