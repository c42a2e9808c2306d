"""``Server-Timing`` on sync invoke answers: only when the request asks for it (as
``zserve bench`` does) or with ``ZSERVE_SERVER_TIMING``; engine time, then each step's."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

WEATHER = "zserve.examples.weather:weather_pipeline"
BODY = {"parameters": {"city": "Paris"}}
TIMING = re.compile(
    r"engine;dur=(\d+\.\d{3}), step\.fetch_data;dur=([\d.e-]+), step\.analyze_data;dur=([\d.e-]+)"
)


def test_only_a_request_that_asks_gets_server_timing(make_client: Callable[..., Any]) -> None:
    client = make_client(WEATHER)
    assert "server-timing" not in client.post("/invoke", json=BODY).headers
    answer = client.post("/invoke", json=BODY, headers={"Zserve-Timing": "1"})
    match = TIMING.fullmatch(answer.headers["server-timing"])
    assert match is not None, answer.headers["server-timing"]
    engine, fetch, analyze = (float(g) for g in match.groups())
    assert 0 < fetch + analyze <= engine <= answer.json()["execution_time_ms"] + 0.01
    failed = make_client("zserve.examples.failing:failing_pipeline")
    refused = failed.post("/invoke", json={"parameters": {}}, headers={"Zserve-Timing": "1"})
    assert refused.status_code == 500 and "server-timing" not in refused.headers


def test_the_setting_puts_it_on_every_sync_answer(make_client: Callable[..., Any]) -> None:
    client = make_client(WEATHER, server_timing=True)
    assert TIMING.fullmatch(client.post("/invoke", json=BODY).headers["server-timing"])
    accepted = client.post("/invoke?mode=async", json=BODY)
    assert accepted.status_code == 202 and "server-timing" not in accepted.headers
