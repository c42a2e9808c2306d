"""Tracked mode against real servers and a real store (SQLite, and PostgreSQL when
``scripts/test-services`` runs it): exactly which rows and files each policy leaves."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from tests.e2e.tracking_helpers import Tracked

TRACKED = "tests.server.tracked:tracked"
DEBUG = "tests.server.tracked:debug_on_error"
NOTHING = {"runs": 0, "steps": 0, "artifacts": 0, "run_metadata": 0}


def invoke(client: httpx.Client, mode: str | None = None, **params: Any) -> httpx.Response:
    body: dict[str, Any] = {"parameters": params}
    if mode is not None:
        body["capture_override"] = {"mode": mode}
    return client.post("/invoke", json=body)


def test_none_records_nothing_at_all(tracked: Tracked) -> None:
    with tracked.start(TRACKED).client() as client:
        answers = [invoke(client).json() for _ in range(3)] + [invoke(client, "none").json()]
    assert {a["capture"] for a in answers} == {"none"}
    assert {a["run_id"] for a in answers} == {None}
    assert tracked.counts() == NOTHING
    assert tracked.files() == []


def test_metadata_records_the_run_and_its_steps_without_values(tracked: Tracked) -> None:
    with tracked.start(TRACKED).client() as client:
        answer = invoke(client, "metadata").json()
        doc = client.get(f"/runs/{answer['run_id']}").json()
    assert answer["capture"] == "metadata" and answer["run_id"]
    assert tracked.counts() == {"runs": 1, "steps": 3, "artifacts": 0, "run_metadata": 0}
    assert doc["capture"] == "metadata" and doc["status"] == "completed"
    assert "parameters" not in doc and "metadata" not in doc
    steps = {s["name"]: s for s in doc["steps"]}
    assert list(steps) == ["lookup_user", "forecast", "report"]
    assert all(s["status"] == "completed" and s["duration_ms"] >= 0 for s in steps.values())
    assert "outputs" not in steps["report"] and steps["report"]["output_size"] > 0
    # a `none` step is a bare row: no size, no values
    assert "output_size" not in steps["lookup_user"]


def test_full_records_values_but_never_private_or_secret_ones(tracked: Tracked) -> None:
    with tracked.start(TRACKED).client() as client:
        answer = invoke(client, "full", city="Oslo", email="bob@example.com").json()
        doc = client.get(f"/runs/{answer['run_id']}").json()
    # email flows into a `none` step, api_key into a Capture("none") input: neither is kept
    assert doc["parameters"] == {"city": "Oslo", "size": 0, "fail": False}
    assert doc["metadata"] == {"model": "v2", "auth_token": "[REDACTED]"}
    steps = {s["name"]: s for s in doc["steps"]}
    assert "outputs" not in steps["lookup_user"]
    assert steps["forecast"]["outputs"]["output"]["value"] == {"city": "Oslo", "temp_c": 21.5}
    report = steps["report"]["outputs"]["output"]
    assert report["value"]["credentials"] == {"password": "[REDACTED]", "max_tokens": 5}
    assert report["loadable"] is True and report["content_type"] == "application/json"
    assert tracked.counts() == {"runs": 1, "steps": 3, "artifacts": 2, "run_metadata": 2}
    stored = json.dumps(tracked.rows("SELECT * FROM artifacts"), default=str)
    for secret in ("bob@example.com", "sk-secret", "hunter2", "t-123"):
        assert secret not in stored
        assert secret not in json.dumps(doc)


def test_errors_only_records_nothing_on_success_and_everything_up_to_a_failure(
    tracked: Tracked,
) -> None:
    with tracked.start(TRACKED).client() as client:
        ok = invoke(client, "errors_only").json()
        assert ok["capture"] == "errors_only" and ok["run_id"] is None
        assert tracked.counts() == NOTHING
        failed = invoke(client, "errors_only", fail=True, city="Rome")
        assert failed.status_code == 500
        problem = failed.json()
        doc = client.get(f"/runs/{problem['run_id']}").json()
    assert doc["status"] == "failed" and doc["parameters"]["city"] == "Rome"
    assert doc["error"]["type"] == "StepFailed" or "report" in json.dumps(doc["error"])
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["forecast"]["outputs"]["output"]["value"]["city"] == "Rome"
    assert steps["report"]["status"] == "failed"
    assert steps["report"]["error"] == {"type": "ValueError", "message": "cannot report on Rome"}
    assert "traceback" not in json.dumps(doc)  # /runs never shows a traceback...
    tb = tracked.rows("SELECT error FROM steps WHERE name = 'report'")[0][0]
    tb = tb if isinstance(tb, dict) else json.loads(tb)
    assert "ValueError: cannot report on Rome" in tb["traceback"]  # ...the store keeps it


def test_sampled_follows_the_override_rate_and_says_sampled_either_way(tracked: Tracked) -> None:
    with tracked.start(TRACKED).client() as client:
        body: dict[str, Any] = {"parameters": {}, "capture_override": {"mode": "sampled"}}
        body["capture_override"]["sample_rate"] = 1.0
        kept = client.post("/invoke", json=body).json()
        body["capture_override"]["sample_rate"] = 0.0
        skipped = client.post("/invoke", json=body).json()
    assert kept["capture"] == skipped["capture"] == "sampled"
    assert kept["run_id"] and skipped["run_id"] is None
    assert tracked.rows("SELECT capture FROM runs") == [("sampled",)]
    assert tracked.count("artifacts") == 2  # a picked request is recorded fully


def test_the_ceiling_caps_what_a_request_asks_and_strips_values(tracked: Tracked) -> None:
    server = tracked.start(TRACKED, ZSERVE_CAPTURE_MAX="metadata")
    with server.client() as client:
        capped = invoke(client, "full").json()
        sampled = client.post(
            "/invoke",
            json={"parameters": {}, "capture_override": {"mode": "sampled", "sample_rate": 1}},
        ).json()
    assert capped["capture"] == "metadata" and capped["capture_requested"] == "full"
    assert sampled["capture"] == "sampled" and "capture_requested" not in sampled
    assert tracked.count("runs") == 2
    assert tracked.count("artifacts") == 0  # under a metadata ceiling no values are kept
    assert tracked.rows("SELECT COUNT(*) FROM runs WHERE parameters IS NOT NULL") == [(0,)]


def test_the_off_switch_records_nothing_whatever_is_asked(tracked: Tracked) -> None:
    server = tracked.start(TRACKED, ZSERVE_CREATE_RUNS="false", ZSERVE_CAPTURE_DEFAULT="full")
    with server.client() as client:
        answer = invoke(client, "full").json()
    assert answer["capture"] == "none" and answer["capture_requested"] == "full"
    assert answer["run_id"] is None
    assert tracked.counts() == NOTHING


def test_precedence_request_over_pipeline_over_environment(tracked: Tracked) -> None:
    # the pipeline says metadata, the environment says full: the pipeline wins...
    server = tracked.start(DEBUG, ZSERVE_CAPTURE_DEFAULT="full")
    with server.client() as client:
        assert client.get("/info").json()["capture_default"] == "metadata"
        by_pipeline = invoke(client).json()
        by_request = invoke(client, "none").json()  # ...and a request beats both
    assert by_pipeline["capture"] == "metadata" and by_pipeline["run_id"]
    assert by_request["capture"] == "none" and by_request["run_id"] is None
    server = tracked.start(TRACKED, ZSERVE_CAPTURE_DEFAULT="metadata")
    with server.client() as client:
        assert invoke(client).json()["capture"] == "metadata"  # the environment's default
    assert tracked.count("runs") == 2


def test_a_step_value_policy_keeps_its_output_only_when_the_run_fails(tracked: Tracked) -> None:
    with tracked.start(DEBUG).client() as client:
        ok = invoke(client, n=3).json()
        bad = invoke(client, n=3, fail=True).json()
        ok_doc = client.get(f"/runs/{ok['run_id']}").json()
        bad_doc = client.get(f"/runs/{bad['run_id']}").json()
    # stage: outputs full with artifacts errors_only, under the pipeline's metadata
    assert "outputs" not in ok_doc["steps"][0]
    assert bad_doc["steps"][0]["outputs"]["output"]["value"] == 6
    assert bad_doc["steps"][1]["status"] == "failed"
    assert tracked.count("artifacts") == 1


def test_large_values_are_files_named_by_hash_and_oversized_ones_truncated(
    tracked: Tracked,
) -> None:
    with tracked.start(TRACKED).client() as client:
        big = invoke(client, "full", size=40_000).json()
        doc = client.get(f"/runs/{big['run_id']}").json()
        artifact = doc["steps"][2]["outputs"]["output"]
        content = client.get(f"/runs/{big['run_id']}/artifacts/{artifact['artifact_id']}")
        huge = invoke(client, "full", size=400_000).json()
        huge_doc = client.get(f"/runs/{huge['run_id']}").json()
    assert content.status_code == 200
    assert hashlib.sha256(content.content).hexdigest() == artifact["sha256"]
    assert json.loads(content.content)["padding"] == "x" * 40_000
    assert artifact["sha256"] in tracked.contents()  # a file (SQLite) or a blob (PostgreSQL)
    assert "value" not in artifact  # a value kept apart is downloaded, not inlined
    huge_artifact = huge_doc["steps"][2]["outputs"]["output"]
    assert huge_artifact["truncated"] is True and huge_artifact["loadable"] is False


def test_async_jobs_are_tracked_and_their_events_say_so(tracked: Tracked) -> None:
    with tracked.start(TRACKED).client() as client:
        body = {"parameters": {}, "capture_override": {"mode": "metadata"}}
        accepted = client.post("/invoke?mode=async", json=body).json()
        assert accepted["capture"] == "metadata"
        with connect_sse(client, "GET", f"/stream/{accepted['job_id']}") as source:
            events = [json.loads(e.data) for e in source.iter_sse()]
        job = client.get(f"/jobs/{accepted['job_id']}").json()
    started = next(e for e in events if e["event"] == "job.started")
    assert started["capture"] == "metadata"
    assert events[-1]["event"] == "job.completed"
    assert events[-1]["run_id"] == job["run_id"] and job["run_id"]
    assert tracked.rows("SELECT job_id FROM runs") == [(accepted["job_id"],)]


@pytest.mark.parametrize("fault", ["read-only", "deleted"])
def test_a_store_that_cannot_be_written_refuses_required_records_before_running(
    tracked: Tracked, fault: str
) -> None:
    if not tracked.url.startswith("sqlite"):
        pytest.skip("a file fault: the PostgreSQL case stops the server instead")
    from tests.e2e.conftest import wait_for
    from tests.e2e.tracking_helpers import sqlite_path
    from tests.store.store_helpers import read_only

    server = tracked.start(TRACKED, ZSERVE_CAPTURE_DEFAULT="metadata")
    path = sqlite_path(tracked.url)
    with contextlib.ExitStack() as stack, server.client() as client:
        assert invoke(client).status_code == 200
        if fault == "deleted":
            for suffix in ("", "-wal", "-shm"):
                (path.parent / (path.name + suffix)).unlink(missing_ok=True)
        else:
            stack.enter_context(read_only(path))
        refused = wait_for(
            lambda: (r := invoke(client)).status_code == 503 and r, "a 503", deadline_s=10
        )
        problem = refused.json()
        assert problem["type"].endswith("/store-unavailable")
        assert "store" in problem["detail"].lower()
        served = client.post(
            "/invoke",
            json={"parameters": {}, "capture_override": {"mode": "sampled", "sample_rate": 1}},
        )
        assert served.status_code == 200 and served.json()["run_id"] is None
        metrics = client.get("/metrics?format=prometheus").text
    assert 'zserve_runs_dropped_total{capture="sampled",reason="store_unavailable"} 1.0' in metrics


def test_postgresql_going_away_while_serving_refuses_then_recovers(tracked: Tracked) -> None:
    if not tracked.url.startswith("postgresql"):
        pytest.skip("the SQLite faults are the file cases above")
    from sqlalchemy import make_url

    from tests.e2e.conftest import wait_for
    from tests.e2e.tracking_helpers import TcpProxy

    real = make_url(tracked.url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    proxy.start()
    via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    server = tracked.start(TRACKED, ZSERVE_CAPTURE_DEFAULT="metadata", ZSERVE_STORE_URL=via_proxy)
    try:
        with server.client() as client:
            assert invoke(client).json()["run_id"]
            proxy.cut()
            refused = wait_for(
                lambda: (r := invoke(client)).status_code == 503 and r, "a 503", deadline_s=20
            )
            assert refused.json()["type"].endswith("/store-unavailable")
            async_job = client.post("/invoke?mode=async", json={"parameters": {}}).json()
            failed = wait_for(
                lambda: (
                    (j := client.get(f"/jobs/{async_job['job_id']}").json())["status"] == "failed"
                    and j
                ),
                "the async job to fail",
            )
            assert failed["error"]["reason"] == "store_unavailable"
            proxy.start()  # PostgreSQL is back: within a few seconds tracked requests are too
            back = wait_for(
                lambda: (r := invoke(client)).status_code == 200 and r, "recovery", deadline_s=20
            )
            assert back.json()["run_id"]
    finally:
        proxy.cut()
    assert tracked.count("runs") == 2


def test_values_without_json_use_a_materializer_or_keep_their_type_and_repr(
    tracked: Tracked,
) -> None:
    with tracked.start("tests.server.tracked:objects").client() as client:
        answer = invoke(client, "full", rows=3).json()
        doc = client.get(f"/runs/{answer['run_id']}").json()
        steps = {s["name"]: s["outputs"]["output"] for s in doc["steps"]}
        matrix = client.get(
            f"/runs/{answer['run_id']}/artifacts/{steps['make_matrix']['artifact_id']}"
        )
    # a registered materializer: its bytes and content type, loadable
    assert steps["make_matrix"]["content_type"] == "text/csv" and steps["make_matrix"]["loadable"]
    assert matrix.content == b"0,0,0\n0,1,2\n0,2,4"
    assert matrix.headers["content-type"].startswith("text/csv")
    # no materializer: the type and repr, not loadable, never pickled
    opaque = steps["make_opaque"]
    assert opaque["loadable"] is False
    assert opaque["value"] == {"type": "tests.server.tracked.Opaque", "repr": "<Opaque thing>"}


def test_background_flush_answers_first_and_commits_soon_after(tracked: Tracked) -> None:
    from tests.e2e.conftest import wait_for

    server = tracked.start(TRACKED, ZSERVE_CAPTURE_FLUSH="background")
    with server.client() as client:
        assert client.get("/status").json()["capture"]["flush"] == "background"
        run_ids = [invoke(client, "metadata").json()["run_id"] for _ in range(20)]
    assert None not in run_ids
    wait_for(lambda: tracked.count("runs") == 20, "the queued runs to be committed", 10)
    assert {row[0] for row in tracked.rows("SELECT id FROM runs")} == set(run_ids)


def test_run_ttl_makes_the_server_prune_its_old_runs(tracked: Tracked) -> None:
    from tests.e2e.conftest import wait_for

    server = tracked.start(TRACKED, ZSERVE_RUN_TTL="2s")
    with server.client() as client:
        assert invoke(client, "full", size=20_000).json()["run_id"]
        assert tracked.count("runs") == 1 and len(tracked.contents()) == 1
        wait_for(lambda: tracked.count("runs") == 0, "the run to be pruned", 15)
    assert tracked.counts() == NOTHING
    wait_for(lambda: not tracked.contents(), "its artifact file or blob to go", 5)
