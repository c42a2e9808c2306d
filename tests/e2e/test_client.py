"""The public Python client against a real server: results, and errors as zserve.errors."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import Serve
from zserve import errors
from zserve.client import AsyncClient, Client


@pytest.fixture
def failing_server(serve: Serve) -> str:
    return serve("zserve.examples.failing:failing_pipeline", ZSERVE_AUTH_KEY="k3y").url


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
        with pytest.raises(errors.StepFailed) as tracked:
            client.invoke({"value": 1}, capture="metadata")
        run_id = tracked.value.problem_doc["run_id"]  # type: ignore[attr-defined]
        run = client.run(run_id)
        assert run["status"] == "failed" and run["capture"] == "metadata"
        assert run["steps"][1]["error"] == {
            "type": "ValueError",
            "message": "cannot process value 1",
        }
        assert client.runs(capture="metadata")["runs"][0]["run_id"] == run_id
        with pytest.raises(errors.NotFound):
            client.run("no-such-run")


def test_wrong_key_is_unauthorized(failing_server: str) -> None:
    with Client(failing_server, auth_key="wrong") as client, pytest.raises(errors.Unauthorized):
        client.info()


def test_unreachable_server() -> None:
    with Client("http://127.0.0.1:9") as client, pytest.raises(errors.ServerUnreachable) as info:
        client.health()
    assert info.value.exit_code == 3


@pytest.mark.anyio
async def test_async_client(serve: Serve) -> None:
    server = serve("zserve.examples.weather:weather_pipeline")
    async with AsyncClient(server.url) as client:
        results = await asyncio.gather(*(client.invoke({"city": f"c{i}"}) for i in range(20)))
    for i, result in enumerate(results):
        assert result.output.startswith(f"Analysis for c{i} ")
        assert result.capture == "none" and result.run_id is None
