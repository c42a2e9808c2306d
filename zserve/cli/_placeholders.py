"""One style for every placeholder in help and usage lines: upper case (``SOURCE``, ``JOB_ID``,
``--limit N``, ``--param NAME=VALUE``), choices as ``[a|b|c]``, an optional argument in
brackets (``[SERVER]``). Typer would write ``{source}``, ``<str>``, ``<list[str]>`` and
``<int range>`` side by side."""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

__all__ = ["name_placeholders"]

#: Placeholders that say more than the parameter's name.
_BY_NAME = {
    "param": "NAME=VALUE",
    "params_json": "JSON|@FILE",
    "limit": "N",
    "tail": "N",
    "requests": "N",
    "client_procs": "N",
    "timeout": "SECONDS",
    "start_timeout": "SECONDS",
    "output": "FILE",
    "save": "FILE",
    "html": "FILE",
    "compare": "FILE",
    "app_dir": "DIR",
    "sample_rate": "RATE",
    "deployment": "REF",
}


def name_placeholders(command: Any) -> None:
    """Give every parameter of ``command`` (a Typer command or group) and its subcommands a
    placeholder in that style."""
    for param in command.params:
        if isinstance(param, TyperArgument | TyperOption):
            _name(param)
    for sub in getattr(command, "commands", {}).values():
        name_placeholders(sub)


def _name(param: TyperArgument | TyperOption) -> None:
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return
    if param.metavar is None:
        described = getattr(param, "type_descriptor", None)  # Typer 0.2x; older: click's type
        choices = getattr(described or getattr(param, "type", None), "choices", None)
        if choices:
            param.metavar = "[" + "|".join(str(getattr(c, "value", c)) for c in choices) + "]"
        else:
            name = param.name or "value"
            param.metavar = _BY_NAME.get(name, name.upper())
    if isinstance(param, TyperArgument):
        # Typer draws an argument's usage as {name} and its help row with a <type>: neither
        shown = param.metavar if param.required else f"[{param.metavar}]"
        overrides: dict[str, Any] = {
            "_usage_display_name": lambda: shown,
            "display_type_rich": lambda ctx: None,
        }
        for attr, value in overrides.items():
            setattr(param, attr, value)
