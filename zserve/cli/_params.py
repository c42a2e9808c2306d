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
