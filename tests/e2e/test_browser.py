"""A real headless Chromium against a real server: what a web page on another origin can do to
a server that has no auth key (nothing, unless its origin is allowed), and DNS rebinding.

The page is served by a real HTTP server at ``http://127.0.0.1:<other port>``: another origin
than the server's, on the loopback interface, so no browser-side Local Network Access rule does
the server's work for it (the server's metrics show the refused requests arrived). Chromium
resolves ``rebind.test`` to 127.0.0.1, as an attacker's DNS would. Needs Debian's ``chromium``
and the ``playwright`` package (``scripts/test`` installs both); skipped where either is missing.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Serve, ServerProcess

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api")

WEATHER = "zserve.examples.weather:weather_pipeline"
BODY = json.dumps({"parameters": {"city": "Paris"}})

SCRIPT = """
window.tryFetch = async (url, opts) => {
  try {
    const r = await fetch(url, opts);
    return {status: r.status, body: await r.text()};
  } catch (e) { return {error: String(e)}; }
};
window.tryWebSocket = (url, message) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  const events = [];
  ws.onopen = () => ws.send(message);
  ws.onmessage = (e) => events.push(JSON.parse(e.data));
  ws.onclose = (e) => resolve({code: e.code, events});
});
"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable,
            args=["--host-resolver-rules=MAP rebind.test 127.0.0.1", "--no-sandbox"],
        )
        yield browser
        browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The origin of another site: a static HTTP server on 127.0.0.1 serving its page."""
    root: Path = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(
        f"<!doctype html><title>other site</title><script>{SCRIPT}</script>"
    )
    handler = functools.partial(_QuietHandler, directory=str(root))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()
    thread.join(5)


@pytest.fixture
def page(browser: Any, page_origin: str) -> Iterator[Any]:
    """A page of ``page_origin``."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{page_origin}/index.html")
    yield page
    context.close()


def invocations(server: ServerProcess, status: str) -> int:
    with server.client() as client:
        doc = client.get("/metrics").json()
    return int(doc["invocations"]["by_status"][status])


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/stream"


def test_a_page_of_another_origin_cannot_run_the_pipeline(serve: Serve, page: Any) -> None:
    server = serve(WEATHER)
    invoke = server.url + "/invoke"
    # a "simple" request, sent without a preflight: the server refuses it unrun
    plain = page.evaluate(
        "([u, b]) => tryFetch(u, {method: 'POST', body: b, "
        "headers: {'Content-Type': 'text/plain'}})",
        [invoke, BODY],
    )
    form = page.evaluate(
        "([u]) => tryFetch(u, {method: 'POST', body: new URLSearchParams({parameters: 'x'})})",
        [invoke],
    )
    # JSON needs a preflight, which a server without ZSERVE_CORS_ORIGINS does not pass
    as_json = page.evaluate(
        "([u, b]) => tryFetch(u, {method: 'POST', body: b, "
        "headers: {'Content-Type': 'application/json'}})",
        [invoke, BODY],
    )
    socket = page.evaluate("([u, b]) => tryWebSocket(u, b)", [ws_url(server), BODY])
    print(f"\ntext/plain: {plain}\nform: {form}\njson: {as_json}\nwebsocket: {socket}")
    for answer in (plain, form, as_json):
        assert "error" in answer  # the page may not read any answer: no CORS headers
    assert socket == {"code": 1006, "events": []}  # the handshake was refused
    assert invocations(server, "completed") == 0, "a page of another origin ran the pipeline"
    assert invocations(server, "invalid") == 2  # the simple requests came, and were refused
    out = server.output()
    assert "Traceback" not in out


def test_an_allowed_origin_can_invoke_and_stream(serve: Serve, page: Any, page_origin: str) -> None:
    server = serve(WEATHER, ZSERVE_CORS_ORIGINS=page_origin)
    answer = page.evaluate(
        "([u, b]) => tryFetch(u, {method: 'POST', body: b, "
        "headers: {'Content-Type': 'application/json'}})",
        [server.url + "/invoke", BODY],
    )
    assert answer.get("status") == 200, answer
    assert json.loads(answer["body"])["outputs"]["output"].startswith("Analysis for Paris")
    socket = page.evaluate("([u, b]) => tryWebSocket(u, b)", [ws_url(server), BODY])
    assert socket["code"] == 1000, socket
    assert socket["events"][-1]["event"] == "job.completed"
    assert invocations(server, "completed") >= 1


def test_dns_rebinding_is_refused(serve: Serve, page: Any) -> None:
    server = serve(WEATHER)
    port = server.url.rsplit(":", 1)[1]
    rebound = page.context.new_page()
    response = rebound.goto(f"http://rebind.test:{port}/info")
    assert response is not None and response.status == 400
    problem = json.loads(rebound.evaluate("() => document.body.innerText"))
    assert problem["status"] == 400 and "ZSERVE_ALLOWED_HOSTS" in problem["detail"]
    # the same page names the server by its address: answered
    assert rebound.goto(f"http://127.0.0.1:{port}/info").status == 200
    # health checks come with any name
    assert rebound.goto(f"http://rebind.test:{port}/health").status == 200


def test_docs_work_offline(serve: Serve, browser: Any) -> None:
    server = serve(WEATHER)
    context = browser.new_context()
    page = context.new_page()
    elsewhere: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:  # what a machine without internet would see
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "weather_pipeline" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector("text=/invoke", timeout=15_000)
    context.close()
    assert elsewhere == [], f"/docs asked the internet for {elsewhere}"


EVENT_SOURCE = """
async ([server, key]) => {
  const auth = {Authorization: `Bearer ${key}`, 'Content-Type': 'application/json'};
  const accepted = await (await fetch(`${server}/invoke?mode=async`, {
    method: 'POST', headers: auth, body: JSON.stringify({parameters: {city: 'Oslo'}}),
  })).json();
  const issued = await (await fetch(`${server}/jobs/${accepted.job_id}/token`, {
    method: 'POST', headers: auth,
  })).json();
  return await new Promise((resolve) => {
    const source = new EventSource(`${server}${issued.stream}`);
    const types = [];
    source.addEventListener('job.completed', () => { types.push('job.completed'); });
    source.onmessage = () => {};
    source.onerror = () => {  // the stream ended; retry: 2000 ms, then the reconnect gets 204
      if (source.readyState === 2) { resolve({url: source.url, types, state: 2}); }
    };
    setTimeout(() => resolve({url: source.url, types, state: source.readyState}), 8000);
  });
}
"""


def test_event_source_follows_a_job_with_a_stream_token(
    serve: Serve, page: Any, page_origin: str
) -> None:
    key = "browser-key-" + "k" * 20
    server = serve(
        WEATHER, ZSERVE_AUTH_KEY=key, ZSERVE_CORS_ORIGINS=page_origin, ZSERVE_ACCESS_LOG="true"
    )
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    result = page.evaluate(EVENT_SOURCE, [server.url, key])
    assert result["types"] == ["job.completed"], result
    assert result["state"] == 2  # CLOSED: no reconnecting for ever
    assert "token=" in result["url"]
    assert not [url for url in requested if key in url], "the key went into a URL"
    log = server.output()
    assert "token=[redacted]" in log and result["url"].split("token=")[1] not in log


FOLLOW = """
([url]) => {
  window.seen = []; window.opens = 0; window.finished = false;
  const source = new EventSource(url);
  source.onopen = () => { window.opens += 1; };
  const types = ['job.queued', 'job.started', 'step.started', 'step.chunk', 'step.progress',
                 'step.completed', 'step.failed', 'job.completed', 'job.failed', 'job.cancelled'];
  for (const type of types) {
    source.addEventListener(type, (e) => {
      window.seen.push(Number(e.lastEventId));
      if (type.startsWith('job.') && type !== 'job.queued' && type !== 'job.started') {
        window.finished = true;
      }
    });
  }
  window.source = source;
}
"""


def test_event_source_resumes_after_a_cut_without_gaps_or_duplicates(
    serve: Serve, page: Any, page_origin: str
) -> None:
    from tests.e2e.tracking_helpers import TcpProxy

    server = serve("zserve.examples.streaming:streaming_pipeline", ZSERVE_CORS_ORIGINS=page_origin)
    host, port = server.url.removeprefix("http://").split(":")
    proxy = TcpProxy((host, int(port)))
    proxy.start()
    try:
        import httpx

        accepted = httpx.post(
            f"{server.url}/invoke?mode=async",
            json={"parameters": {"words": 30, "delay": 0.1}},
        ).json()
        page.evaluate(FOLLOW, [f"http://127.0.0.1:{proxy.port}/stream/{accepted['job_id']}"])
        page.wait_for_function("window.seen.length >= 5", timeout=10_000)
        proxy.cut()  # the connection breaks mid-stream; the browser will reconnect
        proxy.start()
        page.wait_for_function("window.finished", timeout=20_000)
        seen = page.evaluate("window.seen")
        opens = page.evaluate("window.opens")
        page.evaluate("window.source.close()")
    finally:
        proxy.cut()
    print(f"\nEventSource: {len(seen)} events over {opens} connections")
    assert opens >= 2, "the stream was not cut and resumed"
    assert seen == list(range(1, len(seen) + 1)), "a gap or a duplicate"
