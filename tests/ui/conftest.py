"""The dashboard in a real browser: Debian's ``chromium`` driven by Playwright for Python
(``scripts/test`` installs both; these tests skip where either is missing), against real
``zserve`` servers (``tests/e2e/conftest.py``: ``serve``).

``ui`` opens a server's ``/ui`` in a fresh browser context and fails the test on any console
error or uncaught page error; ``shot`` saves a screenshot of the page under the test's tmp dir
(and under ``$ZSERVE_UI_SHOTS`` when set) for a reviewer to look at."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (  # noqa: F401 (fixtures, used by name)
    ServerProcess,
    deployed,
    detached,
    serve,
    servers,
    started,
)

sync_api = pytest.importorskip("playwright.sync_api")

#: read when the module is imported: the ``zhome`` fixture clears every ZSERVE_ variable
SHOTS = os.environ.get("ZSERVE_UI_SHOTS")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@dataclass
class Dashboard:
    """A browser page on a server's dashboard, and what went wrong on it."""

    page: Any
    server: ServerProcess
    shots: Path
    errors: list[str] = field(default_factory=list)

    def open(self, route: str = "") -> Any:
        """Go to ``/ui`` (``route``: the part after ``#``, e.g. ``/jobs``)."""
        self.page.goto(f"{self.server.url}/ui#{route}")
        return self.page

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(SHOTS) / path.name)
        return path


@pytest.fixture
def ui(browser: Any, tmp_path: Path) -> Iterator[Callable[[ServerProcess], Dashboard]]:
    """``ui(server)``: a Dashboard on a fresh browser context (its own session storage)."""
    opened: list[tuple[Any, Dashboard]] = []

    def open_on(server: ServerProcess) -> Dashboard:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(15_000)
        shots = tmp_path / "screenshots"
        shots.mkdir(exist_ok=True)
        board = Dashboard(page, server, shots)
        page.on("console", lambda m: m.type == "error" and board.errors.append(m.text))
        page.on("pageerror", lambda e: board.errors.append(str(e)))
        opened.append((context, board))
        return board

    yield open_on
    for context, _ in opened:
        context.close()
    problems = [e for _, board in opened for e in board.errors]
    assert not problems, f"errors in the browser console: {problems}"
