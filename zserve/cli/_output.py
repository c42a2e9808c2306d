"""What every command shares: JSON envelopes, one-line errors with their exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import typer

from zserve.errors import ZServeError

__all__ = ["JSON_VERSION", "fail", "print_json", "run_guarded"]

JSON_VERSION = 1


def print_json(doc: dict[str, Any]) -> None:
    """Exactly one JSON document on stdout, for scripts."""
    sys.stdout.write(json.dumps({"json_version": JSON_VERSION, **doc}, indent=2, default=str))
    sys.stdout.write("\n")


def fail(err: ZServeError) -> typer.Exit:
    typer.echo(f"Error: {err}", err=True)
    return typer.Exit(err.exit_code)


def run_guarded(app: typer.Typer) -> int:
    """Run the app; a ZServeError becomes one ``Error: ...`` line and its exit code."""
    try:
        app(standalone_mode=False)
    except ZServeError as err:
        typer.echo(f"Error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        typer.echo("Aborted.", err=True)
        return 130
    except KeyboardInterrupt:
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0
