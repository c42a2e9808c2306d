"""``zserve stream JOB_ID``: follow a job's events (``GET /stream/ID``) until it ends.

On a terminal the job is drawn live (one line per step, its streamed chunks and progress under
it, the outputs at the end); piped, every event is one plain line (``SEQ EVENT [STEP] [DETAIL]``);
``--json`` prints one document at the end: ``{"json_version": 1, "job_id", "status", "events"}``;
``--jsonl`` prints each event as one JSON line as it arrives, flushed (for pipelines).
``StreamView`` holds the rendering and is pure: events in, lines (or a rich renderable) out.
``zserve invoke --stream`` uses the same ``follow``; there Ctrl-C cancels the job, here it only
detaches.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from zserve import events as ev
from zserve.cli._format import (
    chunk_text,
    compact,
    format_ms,
    plain_line,
    progress_text,
    step_error,
)
from zserve.cli._output import print_json, print_outputs
from zserve.cli._suggest import job_ids
from zserve.cli._target import (
    DEPLOYMENT_OPTION,
    SERVER_OPTION,
    URL_OPTION,
    locate_job,
    open_client,
)
from zserve.errors import UsageError, ZServeError
from zserve.records import JobStatus, StepStatus

if TYPE_CHECKING:
    from rich.console import RenderableType

    from zserve.client import Client

__all__ = ["EXIT_BY_STATUS", "StepView", "StreamView", "follow", "interrupted", "stream"]

#: The exit code a followed job leaves with (``zserve.errors.EXIT_CODES``).
EXIT_BY_STATUS: dict[str, int] = {
    JobStatus.COMPLETED: 0,
    JobStatus.FAILED: 1,
    JobStatus.CANCELLED: 5,
}

#: How a step (or job) in each state is drawn: a mark and a rich style.
_MARK: dict[str, str] = {
    StepStatus.PENDING: "·",
    StepStatus.RUNNING: "…",
    StepStatus.COMPLETED: "✓",
    StepStatus.FAILED: "✗",
    StepStatus.CANCELLED: "⊘",
}
_STYLE: dict[str, str] = {
    StepStatus.PENDING: "dim",
    StepStatus.RUNNING: "yellow",
    StepStatus.COMPLETED: "green",
    StepStatus.FAILED: "red",
    StepStatus.CANCELLED: "magenta",
}


@dataclass
class StepView:
    """What the view knows of one step."""

    name: str
    status: str = StepStatus.PENDING
    duration_ms: float | None = None
    chunks: list[Any] = field(default_factory=list)
    progress: Any = None
    error: str | None = None


class StreamView:
    """What is known of one job from its events, and how to show it.

    ``feed(event)`` updates the state and returns the event as one plain line;
    ``text_lines()`` / ``renderable()`` draw the whole job (the live view)."""

    def __init__(
        self, job_id: str, steps: Iterable[str] = (), status: str = JobStatus.QUEUED
    ) -> None:
        self.job_id = job_id
        self.status = status
        self.steps: dict[str, StepView] = {name: StepView(name) for name in steps}
        self.events: list[dict[str, Any]] = []
        self.outputs: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.execution_time_ms: float | None = None

    # -- state ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in EXIT_BY_STATUS

    @property
    def exit_code(self) -> int:
        return EXIT_BY_STATUS.get(self.status, 0)

    def step(self, name: str) -> StepView:
        if name not in self.steps:
            self.steps[name] = StepView(name)
        return self.steps[name]

    def feed(self, event: dict[str, Any]) -> str:
        """Take one event; return its plain line."""
        self.events.append(event)
        kind = str(event.get("event", "?"))
        name = event.get("step")
        state = self.step(name) if isinstance(name, str) else None
        if kind == ev.JOB_STARTED:
            self.status = JobStatus.RUNNING
        elif kind == ev.JOB_QUEUED:
            self.status = JobStatus.QUEUED
        elif state is not None and kind == ev.STEP_STARTED:
            state.status = StepStatus.RUNNING
        elif state is not None and kind == ev.STEP_CHUNK:
            state.chunks.append(event.get("chunk"))
        elif state is not None and kind == ev.STEP_PROGRESS:
            state.progress = event.get("progress")
        elif state is not None and kind in (ev.STEP_COMPLETED, ev.STEP_FAILED):
            completed = kind == ev.STEP_COMPLETED
            state.status = StepStatus.COMPLETED if completed else StepStatus.FAILED
            state.duration_ms = event.get("duration_ms")
            if not completed:
                state.error = step_error(event.get("error"))
        elif kind == ev.JOB_COMPLETED:
            self.status = JobStatus.COMPLETED
            self.outputs = event.get("outputs") or {}
            self.execution_time_ms = event.get("execution_time_ms")
        elif kind == ev.JOB_FAILED:
            self.status = JobStatus.FAILED
            self.error = event.get("error") or {}
            failed = self.error.get("step")
            if isinstance(failed, str) and self.step(failed).status != StepStatus.FAILED:
                self.step(failed).status = StepStatus.FAILED
            self._interrupt()
        elif kind == ev.JOB_CANCELLED:
            self.status = JobStatus.CANCELLED
            self._interrupt()
        return plain_line(event)

    def _interrupt(self) -> None:
        for state in self.steps.values():
            if state.status == StepStatus.RUNNING:
                state.status = StepStatus.CANCELLED

    @property
    def error_message(self) -> str:
        """The one line an ``Error:`` shows for a job that did not complete."""
        if self.status == JobStatus.CANCELLED:
            return f"job {self.job_id} was cancelled"
        return f"job {self.job_id} failed: {self.failure}"

    @property
    def failure(self) -> str:
        error = self.error or {}
        return str(error.get("message") or error.get("reason") or "no reason given")

    # -- drawing ----------------------------------------------------------------------------

    def styled_lines(self) -> list[tuple[str, str]]:
        """The live view as (text, rich style) lines."""
        return [(text, style) for text, style, _ in self._rows()]

    def _rows(self) -> list[tuple[str, str, bool]]:
        """(text, style, is a running step's line) for each line of the live view."""
        took = "" if self.execution_time_ms is None else f" in {format_ms(self.execution_time_ms)}"
        title = f"job {self.job_id}  {self.status}{took}"
        rows = [(title, "bold " + _STYLE.get(self.status, ""), False)]
        width = max((len(s) for s in self.steps), default=0)
        for state in self.steps.values():
            detail = ""
            if state.duration_ms is not None:
                detail = format_ms(state.duration_ms)
            elif state.status == StepStatus.RUNNING and state.progress is not None:
                detail = progress_text(state.progress)
            mark = _MARK.get(state.status, "?")
            text = f"  {mark} {state.name:<{width}}  {state.status:<9}  {detail}".rstrip()
            running = state.status == StepStatus.RUNNING
            rows.append((text, _STYLE.get(state.status, ""), running))
            if state.chunks:
                rows.append(("      " + chunk_text(state.chunks), "", False))
            if state.error:
                rows.append(("      " + state.error, "red", False))
        if self.status == JobStatus.FAILED:
            rows.append(("  error: " + self.failure, "red", False))
        return rows

    def text_lines(self) -> list[str]:
        return [text for text, _ in self.styled_lines()]

    def renderable(self) -> RenderableType:
        """The live view for rich: running steps get a spinner instead of their mark."""
        from rich.console import Group
        from rich.padding import Padding
        from rich.spinner import Spinner
        from rich.text import Text

        parts: list[RenderableType] = []
        for text, style, running in self._rows():
            if running:
                spinner = Spinner("dots", Text(text[4:], style=style), style=style)
                parts.append(Padding(spinner, (0, 0, 0, 2)))
            else:
                parts.append(Text(text, style=style))
        return Group(*parts)


# -- following a job --------------------------------------------------------------------------


def follow(
    client: Client,
    job: dict[str, Any],
    *,
    as_json: bool,
    cancel_on_interrupt: bool,
    as_jsonl: bool = False,
    events: Generator[dict[str, Any], None, None] | None = None,
) -> None:
    """Follow ``job`` (its ``GET /jobs/ID`` document) to its end, draw it, and exit with its
    outcome. Ctrl-C cancels the job when ``cancel_on_interrupt``, else only detaches (130).
    ``events``: the job's events when they come from elsewhere than ``GET /stream/ID`` (the
    answer of ``Client.invoke_stream``, whose closing cancels the job)."""
    job_id = str(job["job_id"])
    steps = [str(s["name"]) for s in job.get("steps") or [] if "name" in s]
    view = StreamView(job_id, steps, status=str(job.get("status", JobStatus.QUEUED)))
    own_stream = events is not None
    if events is None:
        events = client.events(job_id)
    try:
        with contextlib.closing(events):
            if as_json:
                for event in events:
                    view.feed(event)
            elif as_jsonl:
                for event in events:
                    view.feed(event)
                    sys.stdout.write(compact(event) + "\n")
                    sys.stdout.flush()
            elif sys.stdout.isatty():
                _live(view, events)
            else:
                for event in events:
                    typer.echo(view.feed(event))
    except KeyboardInterrupt:
        if own_stream:  # closed above: the server cancels the job whose answer it was
            typer.echo(f"Interrupted: job {job_id} is cancelled (its stream closed)", err=True)
        else:
            interrupted(client, job_id, cancel=cancel_on_interrupt)
        raise typer.Exit(130) from None
    if as_json:
        print_json({"job_id": job_id, "status": view.status, "events": view.events})
    elif view.status == JobStatus.COMPLETED and sys.stdout.isatty():
        print_outputs(view.outputs or {})
    if view.status != JobStatus.COMPLETED:
        typer.echo(f"Error: {view.error_message}", err=True)
    raise typer.Exit(view.exit_code)


def _live(view: StreamView, events: Iterable[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.live import Live

    with Live(view.renderable(), console=Console(), refresh_per_second=10) as live:
        for event in events:
            view.feed(event)
            live.update(view.renderable())


def interrupted(client: Client, job_id: str, *, cancel: bool) -> None:
    """After Ctrl-C: cancel the job (``invoke --stream``) or say how to follow it again."""
    if not cancel:
        typer.echo(
            f"Detached from job {job_id}; it goes on (follow it again with "
            f"`zserve stream {job_id}`, or stop it with `zserve jobs cancel {job_id}`)",
            err=True,
        )
        return
    try:
        status = client.cancel(job_id).get("status", JobStatus.CANCELLED)
    except ZServeError as err:
        typer.echo(f"Interrupted; job {job_id} could not be cancelled: {err}", err=True)
        return
    typer.echo(f"Interrupted: job {job_id} is {status}", err=True)


def stream(
    job_id: str = typer.Argument(
        ...,
        help="The job's id (as `zserve invoke --async` prints it) or a unique prefix.",
        autocompletion=job_ids,
    ),
    url: str | None = URL_OPTION,
    server: str | None = SERVER_OPTION,
    deployment: str | None = DEPLOYMENT_OPTION,
    json_: bool = typer.Option(
        False, "--json", help="Print every event as one JSON document when the job ends."
    ),
    jsonl: bool = typer.Option(
        False, "--jsonl", help="Print each event as one JSON line as it arrives (for pipes)."
    ),
) -> None:
    """Follow a job's events live until it ends; exit 0 completed, 1 failed, 5 cancelled.
    JOB_ID is the job's id or a unique prefix of it. Ctrl-C detaches (the job goes on)."""
    if json_ and jsonl:
        raise UsageError("Give --json (one document at the end) or --jsonl (a line per event)")
    target, job = locate_job(job_id, url, server, deployment)
    with open_client(target) as client:
        follow(client, job, as_json=json_, as_jsonl=jsonl, cancel_on_interrupt=False)
