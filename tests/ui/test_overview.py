"""The overview page: the deployment and its parameters, the server's setup, and live uPlot
charts fed from /metrics that move when requests come in."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import Serve, ServerProcess
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.slow

WEATHER = "zserve.examples.weather:weather_pipeline"
FAILING = "zserve.examples.failing:failing_pipeline"


def test_overview_shows_the_deployment_server_and_live_charts(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(WEATHER, workers=2)
    board = ui(server)
    page = board.open("/")
    page.wait_for_selector(".ov-deployment [data-field=name] >> text=weather_pipeline")
    source = page.inner_text(".ov-deployment [data-field=source] td")
    assert source == "zserve.examples.weather:weather_pipeline"
    # the parameters, readable: names, types, which are required, defaults
    assert page.inner_text("[data-param=city] td:nth-child(2)") == "string"
    assert page.inner_text("[data-param=city] td:nth-child(3)") == "yes"
    assert page.inner_text("[data-param=days] td:nth-child(4)") == "1"
    # the server: workers, host id, capture default and ceiling, uptime
    status = httpx.get(f"{server.url}/status").json()
    assert page.inner_text(".ov-server [data-field=workers] td") == "2"
    assert page.inner_text(".ov-server [data-field=host_id] td") == status["host_id"]
    capture = page.inner_text(".ov-server [data-field=capture] td")
    assert f"default {status['capture_default']}" in capture
    assert f"ceiling {status['capture']['max']}" in capture
    assert page.inner_text(".ov-uptime").endswith("s")
    # the charts are uPlot's canvases, from the first sample on
    page.wait_for_selector("[data-chart=rates] .uplot canvas")
    page.wait_for_selector("[data-chart=latency] .uplot canvas")
    page.wait_for_selector(".ov-totals [data-total='0']")
    board.shot("overview-idle")

    with httpx.Client(base_url=server.url) as client:
        for _ in range(40):
            answer = client.post("/invoke", json={"parameters": {"city": "Paris"}})
            assert answer.status_code == 200
        client.post("/invoke?mode=async", json={"parameters": {"city": "Oslo"}})
        client.post("/invoke", json={"parameters": {"town": "Rome"}})  # invalid: an error
    # the next samples count them: the totals, the window's requests and the rates chart
    page.wait_for_selector(".ov-totals [data-total='42']")
    page.wait_for_function("() => +document.querySelector('[data-window]').dataset.window >= 41")
    page.wait_for_selector(".ov-totals [data-errors='1']")
    page.wait_for_selector(".ov-jobs [data-status=completed]")
    # a line needs two rates: the baseline sample, the one that counted them, one more
    page.wait_for_function(
        "() => +document.querySelector('[data-chart=rates]').dataset.points >= 3"
    )
    # the latest rates beside the chart's title; requests/s was above zero at some point
    print(f"jobs: {page.inner_text('.ov-jobs ul')!r}")
    print(f"latest: {page.inner_text('[data-chart=rates] .ov-latest')!r}")
    print(f"latency: {page.inner_text('[data-chart=latency] .ov-latest')!r}")
    assert float(page.inner_text("[data-chart=latency] [data-latest=p99] strong")) > 0
    peak = float(page.get_attribute("[data-chart=rates]", "data-peak") or 0)
    print(f"requests/s peak: {peak}")
    assert peak > 0
    board.shot("overview-after-invokes")


def test_overview_charts_errors_and_keeps_polling(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(FAILING)
    board = ui(server)
    page = board.open("/")
    page.wait_for_selector("[data-param=value]")
    page.wait_for_selector("[data-chart=rates] .uplot canvas")
    with httpx.Client(base_url=server.url) as client:
        for value in range(5):
            client.post("/invoke", json={"parameters": {"value": value}})
    page.wait_for_selector(".ov-totals [data-errors='5']")
    page.wait_for_selector(".ov-jobs [data-status=failed] >> text=5")
    # a hidden tab stops asking; shown again, it samples again
    asked: list[str] = []
    page.on("request", lambda r: "/metrics" in r.url and asked.append(r.url))
    page.evaluate(
        "() => { Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    page.wait_for_timeout(6000)
    hidden = len(asked)
    page.evaluate(
        "() => { Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange')); }"
    )
    page.wait_for_timeout(3000)
    print(f"/metrics asked while hidden: {hidden}, after: {len(asked) - hidden}")
    assert hidden <= 1  # at most one already on its way when the tab went hidden
    assert len(asked) > hidden
    board.shot("overview-errors")
