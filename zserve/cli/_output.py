"""What every command shares: JSON envelopes, and errors shown as one ``Error: ...`` line
with the exit code the error carries (see ``zserve.errors.EXIT_CODES``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from zserve.errors import ZServeError

__all__ = ["JSON_VERSION", "ZServeGroup", "print_json"]

JSON_VERSION = 1


def print_json(doc: dict[str, Any]) -> None:
    """Exactly one JSON document on stdout, for scripts."""
    sys.stdout.write(json.dumps({"json_version": JSON_VERSION, **doc}, indent=2, default=str))
    sys.stdout.write("\n")


class ZServeGroup(TyperGroup):
    """The root command group: a ZServeError from any command becomes one ``Error: ...``
    line on stderr and the error's exit code (typer turns Ctrl-C into 130 itself)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ZServeError as err:
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
