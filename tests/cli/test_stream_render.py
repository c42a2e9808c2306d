"""How `zserve stream` and `zserve invoke --stream` draw a job: StreamView, events in, lines out
(no server needed)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rich.console import Console

from zserve.cli._format import chunk_text, format_ms, plain_line, progress_text, when
from zserve.cli.stream import StreamView

JOB = "6c1f0000-0000-4000-8000-000000000000"


def event(seq: int, kind: str, step: str | None = None, **data: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"event": kind, "job_id": JOB, "seq": seq, "ts": 1_700_000_000.0 + seq}
    if step is not None:
        doc["step"] = step
    return {**doc, **data}


def streaming_job(words: int = 3) -> list[dict[str, Any]]:
    """The events of zserve.examples.streaming:streaming_pipeline, as the server sends them."""
    events = [event(1, "job.queued"), event(2, "job.started"), event(3, "step.started", "generate")]
    for i in range(words):
        events.append(event(len(events) + 1, "step.chunk", "generate", chunk=f"word-{i}"))
    events.append(event(len(events) + 1, "step.completed", "generate", duration_ms=151.096))
    events.append(event(len(events) + 1, "step.started", "summarize"))
    for done in (1, 2, 3):
        progress = {"done": done, "of": 3}
        events.append(event(len(events) + 1, "step.progress", "summarize", progress=progress))
    events.append(event(len(events) + 1, "step.completed", "summarize", duration_ms=1499.9))
    outputs = {"summary": {"tokens": words, "text": "word-0 word-1 word-2"}}
    events.append(event(len(events) + 1, "job.completed", outputs=outputs, execution_time_ms=301.2))
    return events


def test_piped_lines_one_per_event() -> None:
    view = StreamView(JOB, ["generate", "summarize"])
    lines = [view.feed(e) for e in streaming_job()]
    assert lines == [
        f"1 job.queued {JOB}",
        "2 job.started",
        "3 step.started generate",
        "4 step.chunk generate word-0",
        "5 step.chunk generate word-1",
        "6 step.chunk generate word-2",
        "7 step.completed generate 151 ms",
        "8 step.started summarize",
        '9 step.progress summarize {"done": 1, "of": 3}',
        '10 step.progress summarize {"done": 2, "of": 3}',
        '11 step.progress summarize {"done": 3, "of": 3}',
        "12 step.completed summarize 1.50 s",
        '13 job.completed {"summary": {"tokens": 3, "text": "word-0 word-1 word-2"}}',
    ]
    assert view.status == "completed" and view.exit_code == 0
    assert view.outputs == {"summary": {"tokens": 3, "text": "word-0 word-1 word-2"}}
    assert len(view.events) == 13


def test_live_view_while_running_and_at_the_end() -> None:
    view = StreamView(JOB, ["generate", "summarize"])
    events = streaming_job()
    for e in events[:5]:  # queued, started, generate started, two chunks
        view.feed(e)
    assert view.text_lines() == [
        f"job {JOB}  running",
        "  … generate   running",
        "      word-0 word-1",
        "  · summarize  pending",
    ]
    for e in events[5:10]:  # third chunk, generate done, summarize started, progress 1/3 and 2/3
        view.feed(e)
    assert view.text_lines()[1:] == [
        "  ✓ generate   completed  151 ms",
        "      word-0 word-1 word-2",
        "  … summarize  running    2/3",
    ]
    for e in events[10:]:
        view.feed(e)
    assert view.text_lines() == [
        f"job {JOB}  completed in 301 ms",
        "  ✓ generate   completed  151 ms",
        "      word-0 word-1 word-2",
        "  ✓ summarize  completed  1.50 s",
    ]


def test_rich_renderable_shows_the_same_lines() -> None:
    view = StreamView(JOB, ["generate", "summarize"])
    for e in streaming_job()[:5]:
        view.feed(e)
    console = Console(width=100, record=True, color_system=None, force_terminal=False)
    console.print(view.renderable())
    text = console.export_text()
    assert f"job {JOB}  running" in text
    assert "generate   running" in text  # the spinner stands where the mark was
    assert "word-0 word-1" in text and "· summarize  pending" in text


def test_a_failed_step_fails_the_job_with_its_message() -> None:
    view = StreamView(JOB, ["load", "explode"])
    message = "Step 'explode' raised ValueError: cannot process value 2"
    error = {"reason": "step_failed", "step": "explode", "message": message}
    failure = {"type": "ValueError", "message": "cannot process value 2"}
    lines = [
        view.feed(e)
        for e in [
            event(1, "job.queued"),
            event(2, "job.started"),
            event(3, "step.started", "load"),
            event(4, "step.completed", "load", duration_ms=0.05),
            event(5, "step.started", "explode"),
            event(6, "step.failed", "explode", duration_ms=0.2, error=failure),
            event(7, "job.failed", error=error),
        ]
    ]
    assert lines[5] == "6 step.failed explode 0.2 ms ValueError: cannot process value 2"
    assert lines[6] == (
        '7 job.failed {"reason": "step_failed", "step": "explode", "message": "' + message + '"}'
    )
    assert view.status == "failed" and view.exit_code == 1
    assert view.error_message == f"job {JOB} failed: {message}"
    assert view.text_lines() == [
        f"job {JOB}  failed",
        "  ✓ load     completed  0.1 ms",
        "  ✗ explode  failed     0.2 ms",
        "      ValueError: cannot process value 2",
        f"  error: {message}",
    ]


def test_a_cancelled_job_marks_its_running_steps() -> None:
    view = StreamView(JOB, ["wait"])
    for e in [event(1, "job.queued"), event(2, "job.started"), event(3, "step.started", "wait")]:
        view.feed(e)
    assert view.feed(event(4, "job.cancelled", steps_completed=[])) == "4 job.cancelled"
    assert view.status == "cancelled" and view.exit_code == 5
    assert view.error_message == f"job {JOB} was cancelled"
    assert view.text_lines() == [f"job {JOB}  cancelled", "  ⊘ wait  cancelled"]


def test_a_worker_lost_failure_without_a_step() -> None:
    view = StreamView(JOB, ["wait"], status="running")
    error = {"reason": "worker_lost", "message": "The worker running this job stopped"}
    view.feed(event(9, "job.failed", error=error))
    assert view.exit_code == 1
    assert view.error_message.endswith("failed: The worker running this job stopped")
    assert "  ⊘ wait  cancelled" not in view.text_lines()  # it never started here


def test_steps_not_known_up_front_are_added_as_they_start() -> None:
    view = StreamView(JOB)
    view.feed(event(1, "step.started", "a"))
    view.feed(event(2, "step.started", "b"))
    assert list(view.steps) == ["a", "b"]


def test_chunks_that_carry_their_own_spacing_are_not_spaced_again() -> None:
    assert chunk_text(["word-0", "word-1"]) == "word-0 word-1"
    assert chunk_text(["Hel", "lo", " world", "!"]) == "Hello world!"
    assert chunk_text([1, {"a": 2}]) == '1 {"a": 2}'
    assert chunk_text(["x" * 5000]).startswith("…") and len(chunk_text(["x" * 5000])) == 2001


def test_plain_line_keeps_one_line_per_event() -> None:
    two_lines = event(4, "step.chunk", "g", chunk="two\nlines")
    assert plain_line(two_lines) == '4 step.chunk g "two\\nlines"'
    assert plain_line(event(5, "step.chunk", "g", chunk={"t": 1})) == '5 step.chunk g {"t": 1}'
    assert plain_line(event(6, "custom.thing", x=1)) == '6 custom.thing {"x": 1}'


@pytest.mark.parametrize(
    ("progress", "text"),
    [
        ({"done": 2, "of": 3}, "2/3"),
        ({"current": 5, "total": 10}, "5/10"),
        (0.25, "25%"),
        ("loading", "loading"),
        ({"stage": "x"}, '{"stage": "x"}'),
    ],
)
def test_progress_text(progress: Any, text: str) -> None:
    assert progress_text(progress) == text


def test_format_ms() -> None:
    assert [format_ms(v) for v in (0.05, 12.34, 151.096, 1499.9)] == [
        "0.1 ms",
        "12.3 ms",
        "151 ms",
        "1.50 s",
    ]


def test_times_for_people_are_local_and_json_times_stay_iso(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    time.tzset()
    try:
        assert when("2026-01-02T03:04:05.678+00:00") == "2026-01-02 08:34:05"
        assert when("2026-01-02T03:04:05") == "2026-01-02 08:34:05"  # no offset: UTC
        assert when(1767323045.5) == "2026-01-02 08:34:05"  # a Unix time
        assert when(None) == when("not a time") == "-"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
