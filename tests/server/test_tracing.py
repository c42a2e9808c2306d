"""OpenTelemetry spans of jobs and steps, in process: the SDK's in-memory exporter stands in for
the collector (tests/e2e/test_otel.py sends them to a real OTLP receiver)."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import ROOT
from tests.server.waiting import wait_finished
from zserve.server import tracing
from zserve.server.tracing import TraceContextMiddleware

WEATHER = "zserve.examples.weather:weather_pipeline"
FAILING = "zserve.examples.failing:failing_pipeline"
FANOUT = "zserve.examples.fanout:fanout_pipeline"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Every app built in this test traces into this exporter (no OTLP endpoint needed)."""
    exporter = InMemorySpanExporter()
    setup = functools.partial(tracing.setup, processor=SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "setup", setup)
    yield exporter
    exporter.clear()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    found = {s.name: s for s in exporter.get_finished_spans()}
    assert len(found) == len(exporter.get_finished_spans()), "span names repeat"
    return found


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def traceparent_of(span: ReadableSpan) -> str:
    """The span's W3C traceparent (a new trace's flags may have the level-2 random bit)."""
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None and parent.context is not None
    assert child.parent.span_id == parent.context.span_id
    assert child.context is not None and child.context.trace_id == parent.context.trace_id


def test_sync_invoke_is_a_job_span_with_a_child_per_step(
    make_client: Any, spans: InMemorySpanExporter
) -> None:
    client = make_client(WEATHER)
    r = client.post(
        "/invoke",
        json={"parameters": {"city": "Paris"}},
        headers={"traceparent": TRACEPARENT, "tracestate": "vendor=x", "X-Request-ID": "req-1"},
    )
    assert r.status_code == 200, r.text
    found = by_name(spans)
    assert set(found) == {"zserve.job", "zserve.step fetch_data", "zserve.step analyze_data"}
    job = found["zserve.job"]
    trace_id, job_span_id = hex_ids(job)
    assert trace_id == TRACE_ID
    assert job.parent is not None and f"{job.parent.span_id:016x}" == PARENT_ID
    assert job.parent.is_remote
    assert job.kind is SpanKind.SERVER
    assert job.context is not None and job.context.trace_state.get("vendor") == "x"
    attrs = dict(job.attributes or {})
    assert attrs["zserve.job_id"] == r.json()["job_id"]
    assert attrs["zserve.job.mode"] == "sync"
    assert attrs["zserve.capture"] == "none"
    assert attrs["zserve.pipeline"] == "weather_pipeline"
    assert attrs["zserve.deployment.id"] == "0123abcd-0000-4000-8000-000000000000"
    assert attrs["zserve.request_id"] == "req-1"
    assert attrs["zserve.job.status"] == "completed"
    assert "zserve.run_id" not in attrs
    assert job.status.status_code is StatusCode.UNSET
    for name in ("fetch_data", "analyze_data"):
        step = found[f"zserve.step {name}"]
        assert_child(step, job)
        assert step.attributes is not None and step.attributes["zserve.step"] == name
        assert step.status.status_code is StatusCode.UNSET
    # passed on: the answer names the job span, in the caller's trace
    assert r.headers["traceparent"] == f"00-{TRACE_ID}-{job_span_id}-01"
    assert job.resource.attributes["service.name"] == "zserve-weather_pipeline"


def test_a_failing_step_is_an_error_with_its_exception(
    make_client: Any, spans: InMemorySpanExporter
) -> None:
    client = make_client(FAILING)
    r = client.post("/invoke", json={"parameters": {"value": 7}})
    assert r.status_code == 500, r.text
    found = by_name(spans)
    job, load, explode = (found[n] for n in
                          ("zserve.job", "zserve.step load", "zserve.step explode"))  # fmt: skip
    assert load.status.status_code is StatusCode.UNSET
    assert explode.status.status_code is StatusCode.ERROR
    assert "cannot process value 7" in (explode.status.description or "")
    [event] = [e for e in explode.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert "cannot process value 7" in str(event.attributes["exception.message"])
    assert job.status.status_code is StatusCode.ERROR
    assert job.attributes is not None and job.attributes["zserve.job.status"] == "failed"
    assert job.parent is None  # no traceparent: a new trace, whose id the answer gives
    assert r.headers["traceparent"] == traceparent_of(job)


def test_an_async_job_continues_the_callers_trace(
    make_client: Any, spans: InMemorySpanExporter
) -> None:
    client = make_client(FANOUT)
    r = client.post("/invoke?mode=async", json={"parameters": {"n": 2, "delay": 0.05}},
                    headers={"traceparent": TRACEPARENT})  # fmt: skip
    assert r.status_code == 202, r.text
    # its span starts after the answer: the answer echoes the caller's own trace context
    assert r.headers["traceparent"] == TRACEPARENT
    job_id = r.json()["job_id"]
    assert wait_finished(client, job_id)["status"] == "completed"
    found = by_name(spans)
    job = found["zserve.job"]
    assert hex_ids(job)[0] == TRACE_ID
    assert job.parent is not None and f"{job.parent.span_id:016x}" == PARENT_ID
    assert job.kind is SpanKind.CONSUMER
    assert job.attributes is not None
    assert job.attributes["zserve.job.mode"] == "async"
    assert job.attributes["zserve.job_id"] == job_id


def test_fanout_step_spans_are_all_children_of_the_job_span(
    make_client: Any, spans: InMemorySpanExporter
) -> None:
    client = make_client(FANOUT)
    r = client.post("/invoke", json={"parameters": {"n": 2, "delay": 0.1}},
                    headers={"traceparent": TRACEPARENT})  # fmt: skip
    assert r.status_code == 200, r.text
    found = by_name(spans)
    job = found["zserve.job"]
    steps = [found[f"zserve.step {n}"] for n in ("prepare", "left", "right", "combine")]
    for step in steps:
        assert_child(step, job)
    left, right = steps[1], steps[2]
    assert left.start_time is not None and right.start_time is not None
    assert left.end_time is not None and right.end_time is not None
    # the two branches ran at the same time: their spans overlap
    assert left.start_time < right.end_time and right.start_time < left.end_time


def test_a_tracked_run_names_its_run_id(
    make_client: Any, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    client = make_client(WEATHER, store_url=f"sqlite:///{tmp_path}/zserve.db",
                         artifact_dir=str(tmp_path / "artifacts"))  # fmt: skip
    body = {"parameters": {"city": "Paris"}, "capture_override": {"mode": "metadata"}}
    r = client.post("/invoke", json=body)
    assert r.status_code == 200, r.text
    run_id = r.json()["run_id"]
    assert run_id
    job = by_name(spans)["zserve.job"]
    assert job.attributes is not None
    assert job.attributes["zserve.run_id"] == run_id
    assert job.attributes["zserve.capture"] == "metadata"


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is forbidden
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(
    make_client: Any, spans: InMemorySpanExporter, traceparent: str
) -> None:
    client = make_client(WEATHER)
    r = client.post("/invoke", json={"parameters": {"city": "Paris"}},
                    headers={"traceparent": traceparent})  # fmt: skip
    assert r.status_code == 200, r.text
    job = by_name(spans)["zserve.job"]
    assert job.parent is None
    assert hex_ids(job)[0] != TRACE_ID
    assert r.headers["traceparent"] == traceparent_of(job)


def test_other_answers_echo_a_valid_traceparent_only(
    make_client: Any, spans: InMemorySpanExporter
) -> None:
    client = make_client(WEATHER)
    assert client.get("/health", headers={"traceparent": TRACEPARENT}).headers["traceparent"] == (
        TRACEPARENT
    )
    assert "traceparent" not in client.get("/health", headers={"traceparent": "nope"}).headers
    assert "traceparent" not in client.get("/health").headers
    assert spans.get_finished_spans() == ()


def test_a_websocket_job_continues_the_handshakes_trace(
    make_client: Any, spans: InMemorySpanExporter
) -> None:
    client = make_client(WEATHER)
    with client.websocket_connect("/stream", headers={"traceparent": TRACEPARENT}) as ws:
        ws.send_json({"parameters": {"city": "Paris"}})
        while ws.receive_json()["event"] not in ("job.completed", "job.failed"):
            pass
    deadline = time.monotonic() + 5
    while not any(s.name == "zserve.job" for s in spans.get_finished_spans()):
        assert time.monotonic() < deadline, "no job span"
        time.sleep(0.02)
    job = by_name(spans)["zserve.job"]
    assert hex_ids(job)[0] == TRACE_ID
    assert job.attributes is not None and job.attributes["zserve.job.mode"] == "stream"


def test_no_endpoint_no_tracing(make_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in tracing.ENDPOINT_VARS:
        monkeypatch.delenv(var, raising=False)
    client = make_client(WEATHER)
    service = client.app.state.service
    assert service.otel is None
    assert service.jobs.observer_for is None
    stack: Any = client.app.user_middleware
    assert not any(m.cls is TraceContextMiddleware for m in stack)
    r = client.post("/invoke", json={"parameters": {"city": "Paris"}},
                    headers={"traceparent": TRACEPARENT})  # fmt: skip
    assert r.status_code == 200 and "traceparent" not in r.headers


def test_an_endpoint_without_the_sdk_warns_once_and_serves(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="zserve.server"):
        client = make_client(WEATHER)
    warnings = [r.getMessage() for r in caplog.records if "OpenTelemetry" in r.getMessage()]
    assert len(warnings) == 1 and "pip install 'zserve[otel]'" in warnings[0]
    assert client.app.state.service.otel is None
    assert client.post("/invoke", json={"parameters": {"city": "Paris"}}).status_code == 200


def test_with_an_endpoint_spans_go_to_a_batch_otlp_exporter(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "weather-api")
    client = make_client(WEATHER)
    otel = client.app.state.service.otel
    assert otel is not None
    processors = otel.provider._active_span_processor._span_processors
    assert [type(p) for p in processors] == [BatchSpanProcessor]
    assert otel.provider.resource.attributes["service.name"] == "weather-api"
    assert otel.provider.resource.attributes["zserve.pipeline"] == "weather_pipeline"


def test_without_an_endpoint_no_sdk_is_imported() -> None:
    """Tracing off costs nothing: a served app never imports the SDK (fastapi itself may
    import the OpenTelemetry API)."""
    code = (
        "import sys\nfrom tests.conftest import local_app\nfrom zserve.settings import Settings\n"
        "local_app('zserve.examples.weather:weather_pipeline', Settings(home='/nonexistent'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, env=env, cwd=ROOT).stdout  # fmt: skip
    assert out.strip().splitlines()[-1] == "[]"
