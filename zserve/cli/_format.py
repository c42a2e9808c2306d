"""How the CLI writes values for people: durations, times, sizes, streamed chunks, progress,
and one event as one line. Pure functions: text in, text out."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from zserve import events as ev

__all__ = [
    "chunk_text",
    "compact",
    "format_ms",
    "job_duration",
    "mib",
    "parse_time",
    "plain_line",
    "progress_text",
    "step_error",
    "uptime",
    "when",
]

#: How much of a step's streamed text is shown (the end of it).
CHUNK_TAIL = 2000


def format_ms(ms: float) -> str:
    """151.1 ms, 151 ms, 1.52 s."""
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def compact(value: Any) -> str:
    """Any value as one line of JSON (non-ASCII kept as it is)."""
    return json.dumps(value, default=str, ensure_ascii=False)


def progress_text(progress: Any) -> str:
    """``{"done": 2, "of": 3}`` -> ``2/3``; a fraction -> a percentage; else compact JSON."""
    if isinstance(progress, dict):
        for done, total in (("done", "of"), ("done", "total"), ("current", "total")):
            if done in progress and total in progress:
                return f"{progress[done]}/{progress[total]}"
    if isinstance(progress, float) and 0 <= progress <= 1:
        return f"{progress:.0%}"
    return progress if isinstance(progress, str) else compact(progress)


def chunk_text(chunks: list[Any]) -> str:
    """A step's streamed chunks as one text: strings that carry their own spacing (LLM tokens
    such as " world") are joined as they are, others with a space; the end is kept."""
    parts = [c if isinstance(c, str) else compact(c) for c in chunks]
    spaced = any(p[:1].isspace() or p[-1:].isspace() for p in parts)
    text = ("" if spaced else " ").join(parts)
    return text if len(text) <= CHUNK_TAIL else "…" + text[-CHUNK_TAIL:]


def plain_line(event: dict[str, Any]) -> str:
    """One event as one line: ``SEQ EVENT [STEP] [DETAIL]``."""
    kind = str(event.get("event", "?"))
    words = [str(event.get("seq", "?")), kind]
    if event.get("step") is not None:
        words.append(str(event["step"]))
    detail: Any = None
    if kind == ev.JOB_QUEUED:
        detail = event.get("job_id")
    elif kind == ev.STEP_CHUNK:
        chunk = event.get("chunk")
        plain = isinstance(chunk, str) and "\n" not in chunk and "\r" not in chunk
        detail = chunk if plain else compact(chunk)
    elif kind == ev.STEP_PROGRESS:
        detail = compact(event.get("progress"))
    elif kind in (ev.STEP_COMPLETED, ev.STEP_FAILED):
        parts = []
        if event.get("duration_ms") is not None:
            parts.append(format_ms(event["duration_ms"]))
        if kind == ev.STEP_FAILED and (error := step_error(event.get("error"))):
            parts.append(error)
        detail = " ".join(parts) or None
    elif kind == ev.JOB_COMPLETED:
        detail = compact(event.get("outputs") or {})
    elif kind == ev.JOB_FAILED:
        detail = compact(event.get("error") or {})
    elif kind not in (ev.JOB_STARTED, ev.JOB_CANCELLED, ev.STEP_STARTED):
        rest = {k: v for k, v in event.items() if k not in ("event", "job_id", "seq", "ts", "step")}
        detail = compact(rest) if rest else None
    if detail is not None:
        words.append(str(detail))
    return " ".join(words)


def step_error(error: Any) -> str | None:
    """A ``step.failed`` event's error as ``Type: message``."""
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return f"{kind}: {message}" if kind and message else str(kind or message or "")
    return None if error is None else str(error)


def parse_time(ts: Any) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def when(ts: Any) -> str:
    """A time for people: ``YYYY-MM-DD HH:MM:SS`` in local time, from ISO 8601 (what ``--json``
    prints; without an offset it is taken as UTC) or a Unix time; ``-`` when there is none."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        moment: datetime | None = datetime.fromtimestamp(ts, UTC)
    else:
        moment = parse_time(ts)
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def job_duration(job: dict[str, Any]) -> str:
    """How long a job ran (so far, while it runs), from its ``GET /jobs/ID`` document."""
    started, finished = parse_time(job.get("started_at")), parse_time(job.get("finished_at"))
    if started is None:
        return "-"
    end = finished.timestamp() if finished else time.time()
    return format_ms((end - started.timestamp()) * 1000)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def uptime(seconds: float) -> str:
    """42s, 3m05s, 2h07m."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
