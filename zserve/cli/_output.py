"""What every command shares: JSON envelopes, printing outputs, and errors shown as one
``Error: ...`` line with the exit code the error carries (``zserve.errors.EXIT_CODES``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from zserve.errors import InvalidParameters, ZServeError

__all__ = ["JSON_VERSION", "ZServeGroup", "fail", "print_document", "print_json", "print_outputs"]

JSON_VERSION = 1


def print_json(doc: dict[str, Any]) -> None:
    """A local command's result: exactly one JSON document on stdout, versioned."""
    print_document({"json_version": JSON_VERSION, **doc})


def print_document(doc: Any) -> None:
    """A document as it is (a server's answer is printed unchanged)."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str))
    sys.stdout.write("\n")


def print_outputs(outputs: dict[str, Any]) -> None:
    """Outputs for people: a single output alone, several as ``name: value`` lines."""
    if list(outputs) == ["output"]:
        typer.echo(_text(outputs["output"]))
        return
    if not outputs:
        typer.echo("(no outputs)")
    for name, value in outputs.items():
        typer.echo(f"{name}: {_text(value)}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, default=str)


def fail(err: ZServeError, schema: dict[str, dict[str, Any]] | None = None) -> typer.Exit:
    """Show ``err`` as one line on stderr; return the Exit to raise. Invalid parameters are
    told in the command line's terms (``--param NAME``, typed by ``schema`` when known)."""
    message = str(err)
    if isinstance(err, InvalidParameters) and err.errors:
        from zserve.cli._params import param_errors

        message = param_errors(err.errors, schema)
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(err.exit_code)


class ZServeGroup(TyperGroup):
    """The root command group: a ZServeError from any command becomes one ``Error: ...``
    line on stderr and the error's exit code (typer turns Ctrl-C into 130 itself); every
    placeholder in help and usage is written one way (``zserve.cli._placeholders``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from zserve.cli._placeholders import name_placeholders
        from zserve.cli._suggest import attach

        name_placeholders(self)
        attach(self)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ZServeError as err:
            raise fail(err) from None
