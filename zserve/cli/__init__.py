"""The command line: one module per command family.
The only package that imports typer and rich; imports zserve.server only inside `start`."""

from __future__ import annotations

import typer

from zserve._version import __version__
from zserve.cli import (
    bench,
    db,
    deploy,
    deployments,
    dev,
    export,
    invoke,
    jobs,
    run,
    runs,
    servers,
    start,
    stream,
)
from zserve.cli._output import ZServeGroup

__all__ = ["app", "main"]

app = typer.Typer(
    name="zserve",
    cls=ZServeGroup,
    help="Serve Python pipelines over HTTP with millisecond-class latency.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain click-style output: usage errors end in one "Error: ..." line, not a rich box
    rich_markup_mode=None,
    # --install-completion / --show-completion, and Typer's completion classes that answer the
    # scripts in completions/ at each TAB (zserve/cli/_completion.py)
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(ctx: typer.Context, value: bool) -> None:
    # completing `zserve --version <TAB>` parses resiliently: offer commands, don't print
    if value and not ctx.resilient_parsing:
        typer.echo(f"zserve {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        help="Print the version and exit.",
        callback=_version,
        is_eager=True,
    ),
) -> None:
    """Serve Python pipelines over HTTP with millisecond-class latency."""


# What `zserve --help` lists for each command: one short, complete sentence (a docstring's first
# sentence is cut to fit the terminal; `zserve COMMAND --help` shows the whole docstring).
app.command("deploy", short_help="Store a pipeline as a deployment.")(deploy.deploy)
app.add_typer(deployments.app, name="deployments")
app.command("start", short_help="Serve a deployment over HTTP.")(start.start)
app.command("dev", short_help="Serve a working copy, reloading on edits.")(dev.dev)
app.command("ps", short_help="List running servers.")(servers.ps)
app.command("logs", short_help="Print a detached server's log.")(servers.logs)
app.command("stop", short_help="Stop a server, or all of them.")(servers.stop)
app.command("invoke", short_help="Run the pipeline on a server.")(invoke.invoke)
app.add_typer(jobs.app, name="jobs")
app.command("stream", short_help="Follow a job's events until it ends.")(stream.stream)
app.command("run", short_help="Run a pipeline here, without a server.")(run.run)
app.add_typer(runs.app, name="runs")
app.add_typer(export.app, name="export")
app.command("bench", short_help="Measure a server's latency and throughput.")(bench.bench)
app.add_typer(db.app, name="db")


def main() -> None:
    app()
