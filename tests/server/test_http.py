"""The HTTP contract (README, HTTP API), in process with FastAPI's TestClient."""

from __future__ import annotations

import json
from typing import Any

import pytest

WEATHER = "zserve.examples.weather:weather_pipeline"
PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = response.json()
    assert doc["status"] == status and doc["success"] is False
    assert {"type", "title", "detail"} <= doc.keys()
    assert "Traceback" not in response.text
    return doc


def test_sync_invoke(make_client: Any) -> None:
    client = make_client(WEATHER)
    response = client.post("/invoke", json={"parameters": {"city": "Paris", "days": 2}})
    assert response.status_code == 200
    doc = response.json()
    assert doc["success"] is True
    assert doc["outputs"] == {
        "output": "Analysis for Paris over 2 day(s): "
        "{'city': 'Paris', 'weather': 'sunny', 'temp': 25}"
    }
    assert doc["run_id"] is None and doc["capture"] == "none"
    assert len(doc["job_id"]) == 36
    assert doc["execution_time_ms"] >= 0


def test_multi_output_pipeline_answers_each_output(make_client: Any) -> None:
    client = make_client("zserve.examples.multi_output:multi_output_pipeline")
    response = client.post("/invoke", json={"parameters": {"x": 2}})
    assert response.json()["outputs"] == {"output_0": 4, "output_1": "Result: 2"}


def test_a_pipeline_unpacking_a_step_answers_each_item(make_client: Any) -> None:
    client = make_client("tests.unpacking_pipelines:linear_unpacking")
    response = client.post("/invoke", json={"parameters": {"text": "go go go"}})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == {"output_0": "GO-GO", "output_1": 2}
    info = client.get("/info").json()
    assert info["outputs"] == ["output_0", "output_1"]
    shout = next(s for s in info["steps"] if s["name"] == "shout")
    assert shout["inputs"] == {"word": {"kind": "step", "name": "split", "index": 0}}
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["LinearUnpackingParameters"]["properties"]) == {"text"}

    failing = make_client("tests.unpacking_pipelines:miscounting")
    doc = assert_problem(failing.post("/invoke", json={"parameters": {"text": "x"}}), 500)
    assert doc["step"] == "miscount" and "returned 3 values, expected 2" in doc["detail"]


def test_fanout_pipeline_answers_the_dict_of_outputs(make_client: Any) -> None:
    client = make_client("zserve.examples.fanout:fanout_pipeline")
    response = client.post("/invoke", json={"parameters": {"n": 2, "delay": 0.01}})
    assert response.json()["outputs"] == {"result": {"left": 3, "right": 20, "sum": 23}}


def test_parameters_may_be_omitted_when_all_have_defaults(make_client: Any) -> None:
    client = make_client("zserve.examples.slow:slow_pipeline")
    response = client.post("/invoke", json={"parameters": {"delay": 0}})
    assert response.json()["outputs"] == {"tag": "done"}
    response = client.post("/invoke", json={})
    assert response.status_code == 200  # delay defaults to 1.0 s


def test_invalid_parameters_name_every_bad_field(make_client: Any) -> None:
    client = make_client(WEATHER)
    response = client.post("/invoke", json={"parameters": {"days": "many", "colour": "red"}})
    doc = assert_problem(response, 422)
    locs = {tuple(e["loc"]) for e in doc["errors"]}
    assert locs == {("parameters", "city"), ("parameters", "days"), ("parameters", "colour")}
    for field in ("parameters.city", "parameters.days", "parameters.colour"):
        assert field in doc["detail"]


def test_missing_parameters_object(make_client: Any) -> None:
    client = make_client(WEATHER)
    doc = assert_problem(client.post("/invoke", json={}), 422)
    assert doc["errors"][0]["loc"] == ["parameters"]


def test_unknown_top_level_field_is_refused(make_client: Any) -> None:
    client = make_client(WEATHER)
    doc = assert_problem(client.post("/invoke", json={"parameters": {"city": "a"}, "x": 1}), 422)
    assert doc["errors"][0]["loc"] == ["x"]


@pytest.mark.parametrize("body", [b"not json", b"{", b""])
def test_a_body_that_is_not_json_is_400(make_client: Any, body: bytes) -> None:
    client = make_client(WEATHER)
    response = client.post("/invoke", content=body, headers={"content-type": "application/json"})
    doc = assert_problem(response, 400)
    assert "not valid JSON" in doc["detail"]


def test_a_json_body_that_is_not_an_object_is_400(make_client: Any) -> None:
    client = make_client(WEATHER)
    doc = assert_problem(client.post("/invoke", json=[1, 2]), 400)
    assert "must be a JSON object" in doc["detail"]


def test_body_over_the_limit_is_413_by_content_length(make_client: Any) -> None:
    client = make_client(WEATHER, max_body_bytes=100)
    payload = {"parameters": {"city": "x" * 200}}
    doc = assert_problem(client.post("/invoke", json=payload), 413)
    assert "limit of 100 bytes" in doc["detail"]


def test_chunked_body_over_the_limit_is_413(make_client: Any) -> None:
    client = make_client(WEATHER, max_body_bytes=100)

    def chunks() -> Any:
        yield b'{"parameters": {"city": "'
        for _ in range(10):
            yield b"x" * 20
        yield b'"}}'

    json_type = {"content-type": "application/json"}
    assert_problem(client.post("/invoke", content=chunks(), headers=json_type), 413)
    # a small chunked body still goes through
    small = iter([b'{"parameters": ', b'{"city": "a"}}'])
    ok = client.post("/invoke", content=small, headers=json_type)
    assert ok.status_code == 200


def test_a_step_that_raises_is_500_naming_the_step_without_traceback(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client("zserve.examples.failing:failing_pipeline")
    doc = assert_problem(client.post("/invoke", json={"parameters": {"value": 7}}), 500)
    assert doc["step"] == "explode"
    assert doc["detail"] == "Step 'explode' raised ValueError: cannot process value 7"
    assert doc["job_id"] and doc["run_id"] is None
    # the traceback goes to the server log only
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in caplog.records)


def test_timeout_is_504(make_client: Any) -> None:
    client = make_client("zserve.examples.slow:slow_pipeline")
    body = {"parameters": {"delay": 5}, "timeout_s": 0.05}
    doc = assert_problem(client.post("/invoke", json=body), 504)
    assert "0.05 s" in doc["detail"]


def test_a_capture_override_outside_the_modes_or_rate_is_422_naming_the_field(
    make_client: Any,
) -> None:
    client = make_client(WEATHER, create_runs=False)
    body: dict[str, Any] = {"parameters": {"city": "Tokyo"}}
    body["capture_override"] = {"mode": "everything"}
    doc = assert_problem(client.post("/invoke", json=body), 422)
    assert "capture_override.mode" in json.dumps(doc)
    body["capture_override"] = {"mode": "sampled", "sample_rate": 1.5}
    doc = assert_problem(client.post("/invoke", json=body), 422)
    assert "capture_override.sample_rate" in json.dumps(doc)
    # with recording switched off, a tracked request is served run-only and says so
    body["capture_override"] = {"mode": "full"}
    answer = client.post("/invoke", json=body).json()
    assert answer["capture"] == "none" and answer["capture_requested"] == "full"
    assert answer["run_id"] is None


def test_unknown_path_and_method_are_problems(make_client: Any) -> None:
    client = make_client(WEATHER)
    assert "GET /nope" in assert_problem(client.get("/nope"), 404)["detail"]
    assert_problem(client.get("/invoke"), 405)


def test_health_info_status(make_client: Any) -> None:
    client = make_client(WEATHER)
    health = client.get("/health").json()
    assert health["status"] == "healthy"
    assert health["pipeline"] == "weather_pipeline"
    assert {"deployment_id", "uptime_s", "version"} <= health.keys()

    info = client.get("/info").json()
    assert info["pipeline"] == "weather_pipeline"
    assert [s["name"] for s in info["steps"]] == ["fetch_data", "analyze_data"]
    assert info["steps"][1]["inputs"]["weather_data"] == {"kind": "step", "name": "fetch_data"}
    assert info["parameters"] == {
        "city": {"type": "str", "required": True},
        "days": {"type": "int", "required": False, "default": 1},
    }
    schema = info["parameters_json_schema"]
    assert schema["additionalProperties"] is False and schema["required"] == ["city"]
    assert info["outputs"] == ["output"]
    assert info["deployment"]["name"] == "weather_pipeline"
    assert info["capture_default"] == "none"

    status = client.get("/status").json()
    assert status["workers"] == 1 and status["broker"]["kind"] == "memory"
    assert status["limits"]["max_body_bytes"] == 1024 * 1024
    assert "auth_key" not in status and status["auth"] is False
    assert status["uptime_s"] >= 0 and status["started_at"]  # the dashboard's uptime


def test_openapi_documents_the_typed_parameters(make_client: Any) -> None:
    client = make_client(WEATHER)
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/invoke"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/InvokeRequest"}
    params = spec["components"]["schemas"]["WeatherPipelineParameters"]
    assert set(params["properties"]) == {"city", "days"}
    assert client.get("/docs").status_code == 200


def test_metrics_json_and_prometheus(make_client: Any) -> None:
    client = make_client("zserve.examples.failing:failing_pipeline")
    for value in range(3):
        client.post("/invoke", json={"parameters": {"value": value}})
    client.post("/invoke", json={"parameters": {"value": "x"}})
    doc = client.get("/metrics").json()
    assert doc["invocations"]["by_status"]["failed"] == 3
    assert doc["invocations"]["by_status"]["invalid"] == 1
    assert doc["invocations"]["total"] == 4
    assert doc["latency_ms"]["count"] == 3 and doc["latency_ms"]["p50"] is not None
    # the histogram's cumulative buckets (ms; null is +Inf), for percentiles between two samples
    buckets = doc["latency_ms"]["buckets"]
    assert buckets[-1] == [None, 3] and buckets[0][0] == 0.25
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    assert doc["jobs"]["by_status"] == {"failed": 3}  # the invalid request never became a job
    text = client.get("/metrics", headers={"Accept": "text/plain"}).text
    assert 'zserve_invocations_total{capture="none",status="failed"} 3.0' in text
    assert client.get("/metrics?format=prometheus").text == text


def test_auth_key(make_client: Any) -> None:
    client = make_client(WEATHER, auth_key="s3cret")
    assert client.get("/health").status_code == 200  # /health stays open
    doc = assert_problem(client.get("/info"), 401)
    assert "missing" in doc["detail"]
    response = client.post(
        "/invoke", json={"parameters": {"city": "a"}}, headers={"Authorization": "Bearer wrong"}
    )
    assert "wrong" in assert_problem(response, 401)["detail"]
    assert response.headers["www-authenticate"] == "Bearer"
    ok = client.post(
        "/invoke", json={"parameters": {"city": "a"}}, headers={"Authorization": "Bearer s3cret"}
    )
    assert ok.status_code == 200


def test_unserialisable_output_is_a_clear_500(make_client: Any, tmp_path: Any) -> None:
    client = make_client("tests.server.pipelines:returns_object")
    doc = assert_problem(client.post("/invoke", json={"parameters": {}}), 500)
    assert "Output 'output' (Opaque) cannot be encoded as JSON" in doc["detail"]


def test_unknown_mode_is_400(make_client: Any) -> None:
    client = make_client(WEATHER)
    assert_problem(client.post("/invoke?mode=weird", json={"parameters": {"city": "a"}}), 400)


def test_health_is_503_while_draining(make_client: Any) -> None:
    client = make_client(WEATHER)
    service = client.app.state.service
    service.ready, service.draining = False, True
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["status"] == "draining"
    service.ready, service.draining = True, False
    assert client.get("/health").status_code == 200
