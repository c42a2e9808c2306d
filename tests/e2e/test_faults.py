"""Faults end in a state: a server killed with SIGKILL takes its workers with it, and its port
can be served again at once."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.slow

WEATHER = "zserve.examples.weather:weather_pipeline"


def test_workers_die_with_a_killed_supervisor(deployed: Any, servers: Any) -> None:
    deployment = deployed(WEATHER)
    env = {"ZSERVE_DEPLOYMENT_ID": deployment["id"], "ZSERVE_WORKERS": "2", "ZSERVE_GRACE_S": "1"}
    server = servers(env)
    supervisor = psutil.Process(server.proc.pid)

    def workers_up() -> list[psutil.Process] | None:
        kids = [k for k in supervisor.children() if "spawn_main" in " ".join(k.cmdline())]
        return kids if len(kids) == 2 else None

    workers = wait_for(workers_up, "two workers")
    everything = supervisor.children(recursive=True)  # the workers and multiprocessing's helpers
    assert set(workers) <= set(everything)
    port = int(server.url.rsplit(":", 1)[1])
    os.kill(supervisor.pid, signal.SIGKILL)
    killed = time.monotonic()
    server.proc.wait(10)
    _, alive = psutil.wait_procs(everything, timeout=15)
    took = time.monotonic() - killed
    print(f"\nworkers gone {took:.2f} s after the supervisor's SIGKILL; orphaned: {len(alive)}")
    for proc in alive:
        proc.kill()
    assert not alive, "workers outlived their supervisor"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health", timeout=2)
    # the port is free again: a new server takes it
    again = servers({**env, "ZSERVE_PORT": str(port)})
    assert httpx.get(f"{again.url}/health").status_code == 200
