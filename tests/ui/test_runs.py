"""Runs (tracked mode): the list filtered by status, a failed run's page with its timeline, the
failing step and its error, redacted values as the server gives them, and an artifact downloaded
through an authenticated fetch with the bytes the store holds."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Serve, ServerProcess
from tests.ui.conftest import Dashboard

pytestmark = pytest.mark.slow
expect = pytest.importorskip("playwright.sync_api").expect

TRACKED = "tests.server.tracked:tracked"


def test_a_failed_run_shows_its_failing_step_and_error(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(TRACKED, ZSERVE_CAPTURE_DEFAULT="full")
    with server.client() as client:
        ok = client.post("/invoke", json={"parameters": {"city": "Oslo"}}).json()
        bad = client.post("/invoke", json={"parameters": {"fail": True}}).json()
    assert ok["run_id"] and bad["run_id"]
    board = ui(server)
    page = board.open("/runs")
    page.wait_for_selector(f"a[href='#/runs/{bad['run_id']}']")
    assert page.locator(".runs-table tbody tr").count() == 2
    board.shot("runs-list")
    page.select_option("select[name=status]", "failed")
    expect(page.locator(".runs-table tbody tr")).to_have_count(1)
    assert bad["run_id"] in page.inner_text(".runs-table")
    board.shot("runs-list-failed")

    page.click(f"a[href='#/runs/{bad['run_id']}']")
    page.wait_for_selector(".run-timeline")
    failing = page.locator(".run-step-failed")
    assert failing.get_attribute("data-step") == "report"
    error = page.inner_text(".run-step-error")
    assert "report" in error and "ValueError" in error and "cannot report on Paris" in error
    assert "Step 'report' raised ValueError" in page.inner_text(".run-error")
    # every step has a bar; the two parallel branches and the failing step
    assert page.locator(".run-bar").count() == 3
    assert page.locator(".run-bar-failed").count() == 1
    # the metadata as captured: the secret stays redacted
    assert "[REDACTED]" in page.inner_text("main") and "t-123" not in page.inner_text("main")
    board.shot("run-failed")


def test_download_an_artifact_with_the_auth_key(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard], tmp_path: Path
) -> None:
    key = "ui-runs-key-123"
    server = serve(TRACKED, ZSERVE_CAPTURE_DEFAULT="full", ZSERVE_AUTH_KEY=key)
    with server.client(headers={"Authorization": f"Bearer {key}"}) as client:
        run_id = client.post("/invoke", json={"parameters": {"size": 10}}).json()["run_id"]
        doc = client.get(f"/runs/{run_id}").json()
        assert (
            client.get(f"/runs/{run_id}/artifacts/x", headers={"Authorization": ""}).status_code
            == 401
        )
    report = next(s for s in doc["steps"] if s["name"] == "report")
    artifact = report["outputs"]["output"]
    board = ui(server)
    page = board.open(f"/runs/{run_id}")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_selector(".run-timeline")
    board.errors[:] = [e for e in board.errors if "401" not in e]  # /info before the key
    # the captured output, with the password redacted by the server
    assert "[REDACTED]" in page.inner_text(".run-step-outputs")
    assert "hunter2" not in page.inner_text("main")
    board.shot("run-completed")
    with page.expect_download() as info:
        page.click(f".run-download[data-artifact='{artifact['artifact_id']}']")
    target = tmp_path / "artifact.json"
    info.value.save_as(target)
    assert info.value.suggested_filename == "report.output.json"
    data = target.read_bytes()
    assert len(data) == artifact["size"]
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
    with server.client(headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get(f"/runs/{run_id}/artifacts/{artifact['artifact_id']}").content == data
    assert key not in page.url


def test_the_runs_page_without_a_store_says_so(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve("zserve.examples.weather:weather_pipeline")
    board = ui(server)
    page = board.open("/runs")
    page.wait_for_selector(".runs-empty, main p")
    board.shot("runs-empty")


def test_parallel_branches_overlap_on_the_timeline(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve("tests.ui.timeline:branches", ZSERVE_CAPTURE_DEFAULT="metadata")
    with server.client() as client:
        run_id = client.post("/invoke", json={"parameters": {"x": 3}}).json()["run_id"]
    board = ui(server)
    page = board.open(f"/runs/{run_id}")
    page.wait_for_selector(".run-timeline .run-bar")

    def span(step: str) -> tuple[float, float]:
        bar = page.locator(f".run-step[data-step='{step}'] .run-bar")
        left, width = bar.evaluate("(e) => [parseFloat(e.style.left), parseFloat(e.style.width)]")
        return left, left + width

    fast, slow, join = span("fast_branch"), span("slow_branch"), span("join")
    # the branches run at once: their bars overlap; the join starts once the slower one ended
    assert fast[0] < slow[1] and slow[0] < fast[1], (fast, slow)
    assert join[0] >= slow[1] - 1, (slow, join)
    # metadata capture: no values, the sizes only
    assert "not captured" in page.inner_text("main")
    board.shot("run-parallel")


def test_the_list_shows_50_runs_a_page_and_pages_on_with_next(
    serve: Serve, ui: Callable[[ServerProcess], Dashboard]
) -> None:
    server = serve(TRACKED, ZSERVE_CAPTURE_DEFAULT="metadata")
    with server.client() as client:
        ids = [client.post("/invoke", json={"parameters": {}}).json()["run_id"] for _ in range(53)]
    board = ui(server)
    page = board.open("/runs")
    rows = page.locator(".runs-table tbody tr")
    expect(rows).to_have_count(50)
    assert ids[-1] in rows.first.inner_text()  # newest first
    page.click("text=Older →")
    expect(rows).to_have_count(3)
    assert ids[0] in rows.last.inner_text()
    assert page.locator("text=Older →").is_disabled()
    board.shot("runs-page-2")
    page.click("text=← Newer")
    expect(rows).to_have_count(50)
