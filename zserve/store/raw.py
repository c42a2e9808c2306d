"""Rows straight to SQLite's driver: an ``INSERT`` per table with qmark parameters, and the
function that turns a row (a dict) into its parameters. ``runs.insert_batch`` uses it on SQLite,
where SQLAlchemy's per-row parameter processing cost more than the insert itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from sqlalchemy import Table

__all__ = ["raw_insert"]

Encoder = Callable[[dict[str, Any]], tuple[Any, ...]]

_RAW: dict[str, tuple[str, Encoder]] = {}


def raw_insert(table: Table) -> tuple[str, Encoder]:
    """The INSERT of ``table`` for sqlite3 (qmark parameters), and the function that turns a
    row into its parameters: the values in column order (one C call), JSON columns encoded as
    SQLAlchemy's JSON type would, booleans as 0/1."""
    found = _RAW.get(table.name)
    if found is None:
        names = [column.name for column in table.columns]
        kinds = [type(column.type).__name__ for column in table.columns]
        json_at = [i for i, kind in enumerate(kinds) if kind == "JSON"]
        flag_at = [i for i, kind in enumerate(kinds) if kind == "Boolean"]
        pick = itemgetter(*names)

        def encode(row: dict[str, Any]) -> tuple[Any, ...]:
            values = list(pick(row))
            for i in json_at:
                if values[i] is not None:
                    values[i] = json.dumps(values[i])
            for i in flag_at:
                values[i] = 1 if values[i] else 0
            return tuple(values)

        columns = ", ".join(f'"{name}"' for name in names)
        marks = ", ".join("?" for _ in names)
        sql = f'INSERT INTO "{table.name}" ({columns}) VALUES ({marks})'
        found = _RAW[table.name] = (sql, encode)
    return found
