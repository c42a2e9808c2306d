"""``zserve runs list|show|artifact|prune``: recorded runs, read from the store directly (no
server needed), like ``zserve deployments``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zserve.cli._format import when
from zserve.cli._output import print_json
from zserve.cli._suggest import deployment_names
from zserve.errors import NotFound, UsageError
from zserve.records import RunRecord, StepRun
from zserve.settings import Settings, parse_duration

if TYPE_CHECKING:
    from zserve.store import Store

app = typer.Typer(help="List, show, download and prune recorded runs.", no_args_is_help=True)

RUN_HELP = "A run id, a unique prefix of one, or its last characters as `runs list` shows them."
DEPLOYMENT_HELP = "Only runs of this deployment (id, prefix, name or name:version)."
BAR = 40


def _store() -> Store:
    from zserve.store import Store

    settings = Settings.from_env()
    return Store(settings.store_url, artifact_dir=settings.artifact_dir,
                 migrate=settings.store_migrate)  # fmt: skip


@app.command("list")
def list_(
    deployment: str | None = typer.Option(
        None, "--deployment", "-d", help=DEPLOYMENT_HELP, autocompletion=deployment_names
    ),
    status: str | None = typer.Option(None, "--status", help="completed, failed or cancelled."),
    limit: int = typer.Option(20, "--limit", "-n", help="At most this many (1-500)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List recorded runs, newest first."""
    if status is not None and status not in ("completed", "failed", "cancelled"):
        raise UsageError(f"Unknown status {status!r}: use completed, failed or cancelled")
    with _store() as store:
        deployment_id = store.get_deployment(deployment).id if deployment else None
        runs, _ = store.list_runs(deployment_id=deployment_id, status=status, limit=limit)
    if json_:
        print_json({"runs": [r.to_dict() for r in runs]})
        return
    if not runs:
        typer.echo(
            "No recorded runs: invoke with --capture metadata (or full), or serve with "
            "ZSERVE_CAPTURE_DEFAULT=metadata."
        )
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("RUN", "JOB", "PIPELINE", "CAPTURE", "STATUS", "STARTED", "DURATION"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            r.run_id[-8:], r.job_id[:8], escape(r.pipeline), r.capture, str(r.status),
            when(r.started_at), _ms(r.duration_ms),
        )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 1000).print(table)


@app.command("show")
def show(
    run: str = typer.Argument(..., help=RUN_HELP),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show one run as a timeline of its steps.

    With the values as captured, and a failed step's traceback."""
    with _store() as store:
        record = store.get_run(store.resolve_run(run))
    if json_:
        doc = record.to_dict()
        for step, entry in zip(record.steps, doc["steps"], strict=True):
            if step.error is not None and "traceback" in step.error:
                entry["error"]["traceback"] = step.error["traceback"]
        print_json({"run": doc})
        return
    _show(record)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _show(run: RunRecord) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 1000, highlight=False)
    console.print(f"[bold]run {run.run_id}[/]  {run.status}  capture {run.capture}")
    console.print(
        f"  job {run.job_id}  pipeline {escape(run.pipeline)}  deployment {run.deployment_id}"
    )
    console.print(f"  started {when(run.started_at)}  took {_ms(run.duration_ms)}")
    if run.parameters is not None:
        console.print(f"  parameters {run.parameters}", markup=False)
    if run.metadata is not None:
        console.print(f"  metadata {run.metadata}", markup=False)
    if run.error is not None:
        console.print(f"  error {run.error.get('type')}: {run.error.get('message')}", markup=False)
    table = Table(box=None, header_style="bold")
    for col in ("STEP", "STATUS", "START", "DURATION", "TIMELINE", "OUTPUT"):
        table.add_column(col)
    total = run.duration_ms or max((_end(run, s) for s in run.steps), default=0.0) or 1.0
    for s in run.steps:
        offset = _offset(run, s)
        table.add_row(
            escape(s.name), str(s.status), "-" if offset is None else f"+{offset:.1f} ms",
            _ms(s.duration_ms), _bar(offset, s.duration_ms, total), _output(s),
        )  # fmt: skip
    console.print(table)
    for s in run.steps:
        if s.error is not None and s.error.get("traceback"):
            console.print(f"\n[bold red]{s.name}[/] raised:")
            console.print(s.error["traceback"].rstrip(), markup=False)


def _offset(run: RunRecord, step: StepRun) -> float | None:
    if step.started_at is None or run.started_at is None:
        return None
    return max(0.0, (step.started_at - run.started_at) * 1000)


def _end(run: RunRecord, step: StepRun) -> float:
    return (_offset(run, step) or 0.0) + (step.duration_ms or 0.0)


def _bar(offset: float | None, duration: float | None, total: float) -> str:
    """The step's place in the run: blanks up to its start, then a bar as long as it took."""
    if offset is None:
        return ""
    start = min(BAR - 1, int(offset / total * BAR))
    width = max(1, round((duration or 0.0) / total * BAR))
    return " " * start + "█" * min(width, BAR - start)


def _output(step: StepRun) -> str:
    if step.outputs:
        parts = []
        for name, a in step.outputs.items():
            mark = " truncated" if a.truncated else ""
            parts.append(f"{name} ({a.content_type}, {a.size} B{mark})")
        return ", ".join(parts)
    if step.output_size is not None:
        return f"{step.output_size} B (not captured)"
    return ""


@app.command("artifact")
def artifact(
    run: str = typer.Argument(..., help=RUN_HELP),
    target: str = typer.Argument(..., help="STEP or STEP.OUTPUT (the output is 'output')."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """Download one captured value: to a file with -o, else to stdout."""
    step_name, _, name = target.partition(".")
    name = name or "output"
    with _store() as store:
        record = store.get_run(store.resolve_run(run))
        step = next((s for s in record.steps if s.name == step_name), None)
        if step is None:
            steps = ", ".join(s.name for s in record.steps) or "none"
            raise NotFound(f"Run {record.run_id} has no step {step_name!r}: its steps are {steps}")
        found = (step.outputs or {}).get(name)
        if found is None:
            raise NotFound(
                f"Step {step_name!r} of run {record.run_id} has no captured output {name!r}: "
                "its values were not captured (capture 'full' records them)"
            )
        _, content = store.read_artifact(record.run_id, found.artifact_id)
    if output is not None:
        try:
            output.write_bytes(content)
        except OSError as exc:
            raise UsageError(f"Cannot write {output}: {exc.strerror or exc}") from None
        typer.echo(f"Wrote {len(content)} bytes to {output}", err=True)
        return
    sys.stdout.buffer.write(content)
    if not content.endswith(b"\n") and sys.stdout.isatty():
        sys.stdout.buffer.write(b"\n")


@app.command("prune")
def prune(
    older_than: str = typer.Option(..., "--older-than", help="An age: 90s, 15m, 12h, 7d, 2w."),
    deployment: str | None = typer.Option(
        None, "--deployment", "-d", help=DEPLOYMENT_HELP, autocompletion=deployment_names
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be deleted."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Delete runs older than an age, with their artifacts.

    Their rows and their artifact files both go."""
    cutoff = time.time() - parse_duration(older_than, what="--older-than")
    with _store() as store:
        deployment_id = store.get_deployment(deployment).id if deployment else None
        deleted = store.prune_runs(cutoff, deployment_id=deployment_id, dry_run=dry_run)
    if json_:
        doc: dict[str, Any] = {"dry_run": dry_run, "runs": deleted, "count": len(deleted)}
        print_json(doc)
        return
    verb = "Would delete" if dry_run else "Deleted"
    typer.echo(f"{verb} {len(deleted)} run(s) started before {when(cutoff)}")
