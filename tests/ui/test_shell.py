"""The dashboard's shell: served at /ui from the package with a strict CSP, every page loads
without a console error, and with an auth key it asks for the key and refuses a wrong one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Serve, ServerProcess, cli
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.slow

WEATHER = "zserve.examples.weather:weather_pipeline"
PAGES = {"overview": "/", "jobs": "/jobs", "runs": "/runs", "try": "/try"}


def test_every_page_loads_without_a_console_error(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(WEATHER)
    board = ui(server)
    for name, route in PAGES.items():
        page = board.open(route)
        page.wait_for_selector("main h1")
        board.shot(name)
    answer = httpx.get(f"{server.url}/ui")
    assert answer.status_code == 200
    assert "script-src 'self'" in answer.headers["content-security-policy"]


def test_with_an_auth_key_it_asks_for_it_and_refuses_a_wrong_one(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(WEATHER, ZSERVE_AUTH_KEY="right-key-123")
    # the page and its files answer without the key; nothing else does
    assert httpx.get(f"{server.url}/ui").status_code == 200
    assert httpx.get(f"{server.url}/ui/static/app.js").status_code == 200
    assert httpx.get(f"{server.url}/info").status_code == 401
    board = ui(server)
    page = board.open("/")
    page.fill("input[name=key]", "wrong-key")
    page.click("button[type=submit]")
    page.wait_for_selector("text=That key was refused")
    board.shot("login-refused")
    page.fill("input[name=key]", "right-key-123")
    page.click("button[type=submit]")
    page.wait_for_selector("header nav")
    page.wait_for_selector("main h1")
    board.shot("signed-in")
    assert page.evaluate("sessionStorage.getItem('zserve.key')") == "right-key-123"
    # the key never went into a URL
    assert "right-key-123" not in page.url
    board.errors[:] = [e for e in board.errors if "401" not in e]  # the refused key's answers


def test_zserve_start_no_ui_leaves_it_out(detached: Any) -> None:
    cli("deploy", WEATHER, "--name", "weather")
    url = detached("--deployment", "weather", "--no-ui")["url"]
    assert httpx.get(f"{url}/ui").status_code == 404
    assert httpx.get(f"{url}/health").status_code == 200
