"""Parameters are validated as the published schema says (strictly: no strings or booleans for
numbers, no 3.0 for an int, no NaN or infinities), Field constraints hold, a parameter can be
relaxed by annotation; timeout_s holds for steps on the event loop; capture_override errors
are reported as such."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.test_http import WEATHER, assert_problem

TYPED = "tests.server.pipelines:typed"
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"count": "3"}, "count"),
        ({"count": True}, "count"),
        ({"count": 3.0}, "count"),
        ({"count": 0}, "count"),  # Field(ge=1)
        ({"count": 11}, "count"),  # Field(le=10)
        ({"count": 2, "ratio": "1.5"}, "ratio"),
        ({"count": 2, "ratio": True}, "ratio"),
    ],
)
def test_strict_parameters(make_client: Any, params: dict[str, Any], field: str) -> None:
    client = make_client(TYPED)
    doc = assert_problem(client.post("/invoke", json={"parameters": params}), 422)
    assert [e["loc"] for e in doc["errors"]] == [["parameters", field]]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_no_nan_or_infinity(make_client: Any, literal: str) -> None:
    client = make_client(TYPED)
    body = f'{{"parameters": {{"count": 2, "ratio": {literal}}}}}'
    doc = assert_problem(client.post("/invoke", content=body, headers=JSON), 422)
    assert doc["errors"][0]["loc"] == ["parameters", "ratio"]


def test_what_the_schema_allows_is_accepted(make_client: Any) -> None:
    client = make_client(TYPED)
    ok = client.post("/invoke", json={"parameters": {"count": 2, "ratio": 2, "lenient": "5"}})
    assert ok.status_code == 200 and ok.json()["outputs"]["output"] == 9.0  # int for a float
    schema = client.get("/info").json()
    text = str(schema)
    assert "'minimum': 1" in text and "'maximum': 10" in text


def test_timeout_holds_for_steps_on_the_event_loop(make_client: Any) -> None:
    client = make_client(WEATHER)
    body = {"parameters": {"city": "x"}, "timeout_s": 1e-9}
    doc = assert_problem(client.post("/invoke", json=body), 504)
    assert "did not finish within" in doc["detail"]


@pytest.mark.parametrize(
    "override",
    [
        {"mode": "bogus"},
        {"mode": "sampled", "sample_rate": 2},
        {"mode": "none", "sample_rate": 0.5},
    ],
)
def test_capture_override_errors_are_named_as_such(
    make_client: Any, override: dict[str, Any]
) -> None:
    client = make_client(WEATHER)
    body = {"parameters": {"city": "x"}, "capture_override": override}
    response = client.post("/invoke", json=body)
    doc = assert_problem(response, 422)
    assert doc["detail"].startswith("Invalid capture_override"), doc["detail"]
    assert "parameters" not in doc["detail"].split(":")[0]
