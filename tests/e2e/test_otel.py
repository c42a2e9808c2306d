"""Traces end to end: a real server (two workers) exports its spans over OTLP/HTTP to a receiver
this test runs, which decodes them with the OTLP protobuf definitions."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.e2e.conftest import Serve, wait_for

pytestmark = pytest.mark.slow

FANOUT = "zserve.examples.fanout:fanout_pipeline"
STEPS = ("prepare", "left", "right", "combine")


def value(v: AnyValue) -> Any:
    return getattr(v, v.WhichOneof("value") or "string_value")


@dataclass
class Received:
    """One exported span, with its resource's attributes and when it arrived."""

    span: Span
    resource: dict[str, Any]
    at: float

    @property
    def attrs(self) -> dict[str, Any]:
        return {kv.key: value(kv.value) for kv in self.span.attributes}


@dataclass
class Receiver:
    url: str
    spans: list[Received] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of_trace(self, trace_id: str) -> list[Received]:
        with self.lock:
            return [r for r in self.spans if r.span.trace_id.hex() == trace_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP trace receiver on a free port: POST /v1/traces, protobuf."""
    found = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or "protobuf" not in self.headers["Content-Type"]:
                self.send_error(404)
                return
            request = ExportTraceServiceRequest.FromString(body)
            now = time.monotonic()
            with found.lock:
                found.requests += 1
                for rs in request.resource_spans:
                    resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        found.spans.extend(Received(s, resource, now) for s in ss.spans)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def trace_of(n: int) -> tuple[str, str, str]:
    """A caller's trace id, span id and traceparent."""
    trace_id, span_id = f"{0xA1B2 + n:032x}", f"{0xC3D4 + n:016x}"
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def check_job(spans: list[Received], caller_span: str, mode: str) -> Received:
    """One job span, continuing the caller's span, and one child span per step."""
    [job] = [r for r in spans if r.span.name == "zserve.job"]
    assert job.span.parent_span_id.hex() == caller_span
    assert job.span.kind == (Span.SPAN_KIND_SERVER if mode == "sync" else Span.SPAN_KIND_CONSUMER)
    assert job.attrs["zserve.job.mode"] == mode
    assert job.attrs["zserve.pipeline"] == "fanout_pipeline"
    assert job.attrs["zserve.job.status"] == "completed"
    assert job.resource["service.name"] == "zserve-fanout_pipeline"
    steps = {r.span.name: r for r in spans if r.span.name.startswith("zserve.step ")}
    assert set(steps) == {f"zserve.step {s}" for s in STEPS}
    for name, step in steps.items():
        assert step.span.parent_span_id == job.span.span_id, name
        assert step.attrs["zserve.step"] == name.split(" ", 1)[1]
        assert step.span.status.code != Status.STATUS_CODE_ERROR
        assert job.span.start_time_unix_nano <= step.span.start_time_unix_nano
        assert step.span.end_time_unix_nano <= job.span.end_time_unix_nano
    return job


def test_jobs_and_steps_reach_an_otlp_receiver(
    serve: Serve, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(var, raising=False)  # the server inherits this environment
    server = serve(FANOUT, workers=2, ZSERVE_LOG_LEVEL="warning",
                   OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                   OTEL_BSP_SCHEDULE_DELAY="200")  # fmt: skip
    wanted = 1 + len(STEPS)
    delays = []
    # a connection each: the two workers take turns accepting them
    with server.client(headers={"Connection": "close"}) as client:
        for n, mode in enumerate(("sync", "sync", "async", "async")):
            trace_id, span_id, traceparent = trace_of(n)
            sent = time.monotonic()
            r = client.post(f"/invoke?mode={mode}", json={"parameters": {"n": n, "delay": 0.05}},
                            headers={"traceparent": traceparent})  # fmt: skip
            assert r.status_code == (200 if mode == "sync" else 202), r.text
            answered = r.headers["traceparent"]
            spans = wait_for(lambda t=trace_id: len(s := receiver.of_trace(t)) >= wanted and s,
                             f"{wanted} spans of trace {trace_id}", deadline_s=20)  # fmt: skip
            delays.append(max(s.at for s in spans) - sent)
            job = check_job(spans, span_id, mode)
            assert job.attrs["zserve.job_id"] == r.json()["job_id"]
            if mode == "sync":  # the answer names the job span
                assert answered == f"00-{trace_id}-{job.span.span_id.hex()}-01"
            else:  # its span starts after the answer: the caller's own context comes back
                assert answered == traceparent
        for _ in range(40):  # until both workers have traced a job
            if len({r.resource["process.pid"] for r in receiver.spans}) > 1:
                break
            assert client.post("/invoke", json={"parameters": {"delay": 0}}).status_code == 200
            time.sleep(0.3)
        # the last job's spans are exported at the latest when the server stops
        trace_id, span_id, traceparent = trace_of(9)
        r = client.post("/invoke", json={"parameters": {"n": 9, "delay": 0.05}},
                        headers={"traceparent": traceparent})  # fmt: skip
        assert r.status_code == 200, r.text
    assert server.stop() == 0
    with contextlib.suppress(AssertionError):  # reported below if they never came
        wait_for(lambda: len(receiver.of_trace(trace_id)) >= wanted, "last spans", deadline_s=5)
    check_job(receiver.of_trace(trace_id), span_id, "sync")
    pids = {r.resource["process.pid"] for r in receiver.spans}
    assert len(pids) == 2, "one worker answered every request"
    print(f"\nOTLP receiver: {len(receiver.spans)} spans in {receiver.requests} export requests "
          f"from {len(pids)} worker(s); spans of a job received "
          f"{min(delays) * 1000:.0f}-{max(delays) * 1000:.0f} ms after its request was sent "
          f"(batch delay 200 ms)")  # fmt: skip
    assert len(receiver.spans) % wanted == 0 and len(receiver.spans) >= 5 * wanted
