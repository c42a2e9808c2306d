"""The public Python client against a real server: results, and errors as zserve.errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from zserve import errors
from zserve.client import AsyncClient, Client


@pytest.fixture
def failing_server(deployed: Any, servers: Any) -> str:
    deployment = deployed("zserve.examples.failing:failing_pipeline")
    server = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"], "ZSERVE_AUTH_KEY": "k3y"})
    url: str = server.url
    return url


def test_invoke_info_health(failing_server: str) -> None:
    with Client(failing_server, auth_key="k3y") as client:
        assert client.health()["status"] == "healthy"
        assert client.info()["pipeline"] == "failing_pipeline"
        with pytest.raises(errors.StepFailed) as info:
            client.invoke({"value": 4})
        assert info.value.step == "explode"
        assert str(info.value) == "Step 'explode' raised ValueError: cannot process value 4"
        assert info.value.exit_code == 1
        assert info.value.problem_doc["job_id"]  # type: ignore[attr-defined]

        with pytest.raises(errors.InvalidParameters) as bad:
            client.invoke({"value": "four", "nope": 1})
        assert {tuple(e["loc"]) for e in bad.value.errors} == {
            ("parameters", "value"),
            ("parameters", "nope"),
        }
        with pytest.raises(errors.ExecutionTimeout):
            client.invoke({"value": 1}, timeout_s=1e-9)
        with pytest.raises(errors.CaptureNotSupported):
            client.invoke({"value": 1}, capture="full")


def test_wrong_key_is_unauthorized(failing_server: str) -> None:
    with Client(failing_server, auth_key="wrong") as client, pytest.raises(errors.Unauthorized):
        client.info()


def test_unreachable_server() -> None:
    with Client("http://127.0.0.1:9") as client, pytest.raises(errors.ServerUnreachable) as info:
        client.health()
    assert info.value.exit_code == 3


def test_async_client(deployed: Any, servers: Any) -> None:
    deployment = deployed("zserve.examples.weather:weather_pipeline")
    server = servers({"ZSERVE_DEPLOYMENT_ID": deployment["id"]})

    async def main() -> list[Any]:
        async with AsyncClient(server.url) as client:
            return await asyncio.gather(*(client.invoke({"city": f"c{i}"}) for i in range(20)))

    results = asyncio.run(main())
    for i, result in enumerate(results):
        assert result.output.startswith(f"Analysis for c{i} ")
        assert result.capture == "none" and result.run_id is None
