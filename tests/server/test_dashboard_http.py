"""The dashboard's routes without a browser: the page and its files, the CSP, what answers
without the auth key, and ``ZSERVE_UI=0``."""

from __future__ import annotations

from typing import Any

WEATHER = "zserve.examples.weather:weather_pipeline"


def test_the_page_and_its_files_are_served_with_a_strict_csp(make_client: Any) -> None:
    client = make_client(WEATHER)
    page = client.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp  # no inline script, no eval
    assert client.get("/ui/").text == page.text
    for path in ("app.js", "api.js", "style.css", "vendor/htm-preact.module.js",
                 "vendor/uPlot.esm.js", "vendor/LICENSE.uplot.txt"):  # fmt: skip
        assert client.get(f"/ui/static/{path}").status_code == 200, path
    assert client.get("/ui/static/nothing.js").status_code == 404
    assert client.get("/ui/static/../../settings.py").status_code == 404
    assert "/ui" not in client.get("/openapi.json").json()["paths"]


def test_with_a_key_only_the_page_its_files_and_the_probes_answer_without_it(
    make_client: Any,
) -> None:
    client = make_client(WEATHER, auth_key="k" * 24)
    assert client.get("/ui").status_code == 200
    assert client.get("/ui/static/app.js").status_code == 200
    for path in ("/info", "/status", "/metrics", "/jobs", "/runs", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 401, path
    assert client.get("/info", headers={"Authorization": "Bearer " + "k" * 24}).status_code == 200


def test_zserve_ui_0_leaves_the_dashboard_out(make_client: Any) -> None:
    client = make_client(WEATHER, ui=False)
    assert client.get("/ui").status_code == 404
    assert client.get("/ui/static/app.js").status_code == 404
