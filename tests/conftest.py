"""Shared fixtures: an isolated ZSERVE_HOME, in-process apps, and the event loop of async tests.

Real processes (the command line, servers) are in tests/e2e/conftest.py: only e2e uses them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fastapi import FastAPI

    from zserve.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def anyio_backend() -> str:
    """Tests marked ``anyio`` (``async def``) run on asyncio, each on a loop of its own."""
    return "asyncio"


@pytest.fixture
def zhome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ZSERVE_HOME (embedded store, registry) for this test only."""
    home = tmp_path / "zhome"
    for var in list(os.environ):
        if var.startswith(("ZSERVE_", "ZENML_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("ZSERVE_HOME", str(home))
    return home


def local_app(source: str, settings: Settings) -> FastAPI:
    """The server app for a pipeline source, with a made-up deployment record (no store)."""
    from zserve.engine.plan import compile_plan
    from zserve.records import DeploymentRecord
    from zserve.sdk.loader import load_pipeline
    from zserve.server.app import create_app

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
    return create_app(settings, record, plan)


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    """Build an in-process TestClient for a pipeline source (no store involved)."""
    from fastapi.testclient import TestClient

    from zserve.settings import Settings

    class LoopbackClient(TestClient):
        """Calls the app as http://127.0.0.1, WebSockets included (the server checks Host)."""

        def websocket_connect(self, url: str, *args: Any, **kwargs: Any) -> Any:
            if url.startswith("/"):
                url = "ws://127.0.0.1" + url
            return super().websocket_connect(url, *args, **kwargs)

    clients: list[TestClient] = []

    def build(source: str, **settings: Any) -> TestClient:
        app = local_app(source, Settings(home="/nonexistent", **settings))
        client = LoopbackClient(app, base_url="http://127.0.0.1")
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for c in clients:
        c.__exit__(None, None, None)
