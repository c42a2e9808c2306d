"""TAB completion of names and ids against real servers: deployment names from the store, server
ids and served deployments from the registry, job ids from a server's `GET /jobs?prefix=`. Each
goes through the real `zserve` entry point with the completion protocol the shells' scripts use
(tests/test_completions.py runs those scripts in the shells themselves)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Detached, cli
from tests.e2e.test_cli_jobs import SLOW, serve, submit
from zserve.cli._completion import COMPLETE_VAR

ROOT = Path(__file__).resolve().parents[2]
PROBE = textwrap.dedent(
    """
    import atexit, json, sys
    atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
    sys.argv = ["zserve"]
    from zserve.cli import main
    main()
    """
)
HEAVY = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "httpx", "zserve.server"}


def complete(line: str, **env: str) -> list[tuple[str, str]]:
    """What TAB offers at the end of LINE, as (value, description) pairs (fish's protocol);
    and checks that answering loaded nothing heavy."""
    completing = {
        COMPLETE_VAR: "complete_fish",
        "_TYPER_COMPLETE_ARGS": line,
        "_TYPER_COMPLETE_FISH_ACTION": "get-args",
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **completing, **env},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert not {n.split(".")[0] for n in loaded} & HEAVY, line
    pairs = [entry.partition("\t") for entry in result.stdout.splitlines() if entry]
    return [(value, help_) for value, _, help_ in pairs]


def values(line: str, **env: str) -> list[str]:
    return [v for v, _ in complete(line, **env)]


def test_deployment_names_server_ids_and_job_ids_complete(detached: Detached) -> None:
    server: dict[str, Any] = serve(detached, SLOW, "slow")
    cli("deploy", "zserve.examples.weather:weather_pipeline", "--name", "weather")
    job_id = submit("-p", "delay=0")

    assert values("zserve start --deployment ") == ["slow", "weather"]
    assert values("zserve deployments show we") == ["weather"]
    assert values("zserve deployments show slow:") == ["slow:1"]
    assert values("zserve run s") == ["slow"]
    # client commands name running servers: only the served deployment
    assert values("zserve invoke --deployment ") == ["slow"]
    sid = server["server_id"]
    assert complete("zserve logs ") == [(sid, f"slow:1 at {server['url']}")]
    assert values(f"zserve jobs show --server {sid[:2]}") == [sid]

    assert values("zserve jobs show ") == [job_id]
    assert values(f"zserve stream {job_id[:3]}") == [job_id]
    assert values(f"zserve jobs cancel --server {sid} {job_id[:2]}") == [job_id]
    other = next(c for c in "0123456789abcdef" if c != job_id[0])
    assert values(f"zserve jobs show {other}") == []
    assert values("zserve jobs show --url http://127.0.0.1:9 ") == []
