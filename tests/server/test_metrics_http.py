"""/metrics: content negotiation (JSON, Prometheus text, OpenMetrics), refused requests counted,
no ``_created`` series, and latency percentiles that never claim more than was observed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.test_http import WEATHER, assert_problem
from zserve.errors import UsageError
from zserve.server.metrics import BUCKETS, CONTENT_TYPE, OPENMETRICS_TYPE, _quantile, negotiate

PROM = CONTENT_TYPE  # prometheus_client's text format
OPENMETRICS = OPENMETRICS_TYPE


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/plain", PROM),
        ("text/plain;version=0.0.4", PROM),
        ("application/openmetrics-text; version=1.0.0", OPENMETRICS),
        # what Prometheus itself sends
        (
            "application/openmetrics-text;version=1.0.0;q=0.5,"
            "text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
            OPENMETRICS,
        ),
        ("text/plain;q=0, application/json", "application/json"),
        ("text/plain;q=0.2, application/json;q=0.9", "application/json"),
        ("text/plain;q=0.9, application/json;q=0.2", PROM),
        ("text/html, */*;q=0.1", "application/json"),
    ],
)
def test_accept_is_negotiated(make_client: Any, accept: str | None, expected: str) -> None:
    client = make_client(WEATHER)
    headers = {} if accept is None else {"accept": accept}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == expected
    if expected == OPENMETRICS:
        assert response.text.endswith("# EOF\n")


def test_nothing_acceptable_is_406(make_client: Any) -> None:
    client = make_client(WEATHER)
    doc = assert_problem(client.get("/metrics", headers={"accept": "image/png"}), 406)
    assert "application/json" in doc["detail"] and "text/plain" in doc["detail"]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("json", "application/json"), ("prometheus", PROM), ("openmetrics", OPENMETRICS)],
)
def test_format_parameter(make_client: Any, fmt: str, expected: str) -> None:
    client = make_client(WEATHER)
    response = client.get(f"/metrics?format={fmt}", headers={"accept": "image/png"})
    assert response.headers["content-type"] == expected


def test_unknown_format_is_refused(make_client: Any) -> None:
    client = make_client(WEATHER)
    doc = assert_problem(client.get("/metrics?format=bogus"), 422)
    assert "format" in doc["detail"]
    with pytest.raises(UsageError, match=r"'bogus'.*format=prometheus"):
        negotiate("bogus", None)


def test_no_created_series(make_client: Any) -> None:
    client = make_client(WEATHER)
    client.post("/invoke", json={"parameters": {"city": "a"}})
    assert "_created" not in client.get("/metrics?format=prometheus").text


def test_overloaded_and_unsupported_media_answers_are_counted(make_client: Any) -> None:
    client = make_client(
        "zserve.examples.slow:slow_pipeline", max_concurrency=1, max_queue=0, timeout_s=None
    )
    import threading

    slow = threading.Thread(
        target=lambda: client.post("/invoke", json={"parameters": {"delay": 1.0}})
    )
    slow.start()
    try:
        for _ in range(200):  # until the slow one holds the only slot
            if client.get("/metrics").json()["jobs"]["by_status"].get("running"):
                break
            threading.Event().wait(0.01)
        refused = client.post("/invoke", json={"parameters": {"delay": 0}})
        assert refused.status_code == 429
    finally:
        slow.join()
    client.post("/invoke", content=b"{}", headers={"content-type": "text/plain"})
    by_status = client.get("/metrics").json()["invocations"]["by_status"]
    assert by_status["rejected"] == 1 and by_status["invalid"] == 1
    assert by_status["completed"] == 1


def cumulative(counts: dict[float, int]) -> list[tuple[float, float]]:
    total, out = 0, []
    for le in BUCKETS:
        total += counts.get(le, 0)
        out.append((le, float(total)))
    return out


def test_percentiles_are_bucket_upper_bounds_never_beyond_the_bucket() -> None:
    # every job took ~6.0 s: all in the (5.0, 10.0] bucket; interpolation used to say 7.5 s
    buckets = cumulative({10.0: 100})
    assert _quantile(buckets, 0.5) == 10_000.0  # at most 10 s: what the buckets can say
    assert _quantile(buckets, 0.99) == 10_000.0
    fast = cumulative({0.00025: 90, 0.001: 10})
    assert _quantile(fast, 0.5) == 0.25 and _quantile(fast, 0.95) == 1.0
    slowest = cumulative({float("inf"): 5})
    assert _quantile(slowest, 0.5) is None  # over the largest bound: unknown, not a guess
    assert _quantile([], 0.5) is None
