"""The command line: one module per command family.
The only package that imports typer and rich; imports zserve.server only inside `start`."""

from __future__ import annotations

import typer

from zserve._version import __version__
from zserve.cli import (
    bench,
    deploy,
    deployments,
    dev,
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


app.command("deploy")(deploy.deploy)
app.add_typer(deployments.app, name="deployments")
app.command("start")(start.start)
app.command("dev")(dev.dev)
app.command("ps")(servers.ps)
app.command("logs")(servers.logs)
app.command("stop")(servers.stop)
app.command("invoke")(invoke.invoke)
app.add_typer(jobs.app, name="jobs")
app.command("stream")(stream.stream)
app.command("run")(run.run)
app.add_typer(runs.app, name="runs")
app.command("bench")(bench.bench)


def main() -> None:
    app()
