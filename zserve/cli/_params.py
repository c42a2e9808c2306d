"""``--param k=v`` and ``--params-json``: from the command line to a parameters dict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from zserve.errors import UsageError

__all__ = ["parse_params"]


def parse_params(
    pairs: list[str] | None, params_json: str | None, schema: dict[str, dict[str, Any]] | None
) -> dict[str, Any]:
    """``--params-json`` first, then each ``--param`` on top.

    A ``--param`` value is taken verbatim for a ``str`` parameter; for any other it is read as
    JSON (``days=3`` -> 3, ``tags=["a"]`` -> a list), falling back to the string; the server
    validates the result against the pipeline's signature.
    """
    params: dict[str, Any] = {}
    if params_json:
        params.update(_load_json(params_json))
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param {pair!r} is not of the form name=value")
        params[name] = _coerce(raw, (schema or {}).get(name, {}).get("type"))
    return params


def _coerce(raw: str, type_name: str | None) -> Any:
    if type_name == "str":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _load_json(value: str) -> dict[str, Any]:
    source = "--params-json"
    text = value
    if value.startswith("@"):
        name = value[1:]
        if name == "-":
            text, source = sys.stdin.read(), "--params-json @- (stdin)"
        else:
            try:
                text, source = Path(name).read_text(), f"--params-json {value}"
            except OSError as exc:
                raise UsageError(f"Cannot read {name}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f'{source} must be a JSON object such as {{"city": "Paris"}}')
    return doc


#: What pydantic puts before a validator's own message.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def param_errors(
    errors: list[dict[str, Any]], schema: dict[str, dict[str, Any]] | None = None
) -> str:
    """Field errors (``InvalidParameters.errors``) in the command line's terms: ``--param
    items (list[str]) is required``, with a JSON hint for list and dict parameters."""
    parts: list[str] = []
    json_hint: str | None = None
    for error in errors:
        loc = [str(p) for p in error.get("loc") or ()]
        msg = str(error.get("msg") or "is not valid")
        for prefix in _PYDANTIC_PREFIXES:
            msg = msg.removeprefix(prefix)
        if len(loc) < 2 or loc[0] != "parameters":  # not a parameter: capture_override...
            parts.append(f"{'.'.join(loc) or 'request'}: {msg}")
            continue
        name, inner = loc[1], loc[2:]
        type_name = (schema or {}).get(name, {}).get("type")
        flag = f"--param {name}" + (f" ({type_name})" if type_name else "")
        if msg == "Field required" and not inner:
            parts.append(f"{flag} is required")
        elif msg == "Extra inputs are not permitted":
            known = f" (its parameters: {', '.join(schema)})" if schema else ""
            parts.append(f"--param {name} is not a parameter of this pipeline{known}")
            continue
        else:
            where = f"at {'.'.join(inner)}: " if inner else ""
            parts.append(f"{flag}: {where}{msg}")
        if json_hint is None and type_name:
            json_hint = _json_example(name, type_name)
    hint = f" (list and dict values are JSON: {json_hint})" if json_hint else ""
    return "; ".join(parts) + hint


def _json_example(name: str, type_name: str) -> str | None:
    base = type_name.split("[", 1)[0].strip().lower()
    if base in ("list", "tuple", "set", "frozenset", "sequence"):
        return f'--param {name}=\'["a","b"]\''
    if base in ("dict", "mapping"):
        return f"--param {name}='{{\"key\": 1}}'"
    return None
