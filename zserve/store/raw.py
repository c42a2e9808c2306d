"""Run writes straight to SQLite's driver, where SQLAlchemy's per-statement and per-row work cost
more than the inserts themselves: one DBAPI connection kept for them (``RawWrites``), ``BEGIN
IMMEDIATE`` .. ``COMMIT`` on it, and one ``executemany`` per table with JSON columns encoded as
SQLAlchemy's JSON type would (``insert_rows``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.pool import PoolProxiedConnection

__all__ = ["RawWrites", "insert_rows"]

_SQL: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[int, ...]]] = {}


def _statement(table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """The INSERT of ``columns`` (qmark parameters) and the positions of its JSON columns."""
    key = (table.name, columns)
    found = _SQL.get(key)
    if found is None:
        kinds = {column.name: type(column.type).__name__ for column in table.columns}
        json_at = tuple(i for i, name in enumerate(columns) if kinds[name] == "JSON")
        names = ", ".join(f'"{name}"' for name in columns)
        marks = ", ".join("?" for _ in columns)
        found = _SQL[key] = (f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', json_at)
    return found


def insert_rows(
    cursor: Any, table: Table, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]
) -> None:
    """INSERT ``rows`` (tuples in the order of ``columns``) into ``table`` in one call."""
    sql, json_at = _statement(table, columns)
    if json_at:
        rows = [_encoded(row, json_at) for row in rows]
    cursor.executemany(sql, rows)


def _encoded(row: tuple[Any, ...], json_at: tuple[int, ...]) -> tuple[Any, ...]:
    for i in json_at:
        if row[i] is not None:
            break
    else:
        return row
    values = list(row)
    for i in json_at:
        if values[i] is not None:
            values[i] = json.dumps(values[i])
    return tuple(values)


class RawWrites:
    """Write transactions on one DBAPI connection taken from ``engine``'s pool once (so its
    ``connect`` hook has set the pragmas), for one thread at a time. A transaction that fails
    is rolled back; a connection that cannot even roll back is thrown away for a fresh one."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._conn: PoolProxiedConnection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor inside ``BEGIN IMMEDIATE``; committed when the block ends without error."""
        with self._lock:
            if self._conn is None:
                self._conn = self._engine.raw_connection()
            cursor = self._conn.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                self._roll_back(cursor)
                raise
            finally:
                cursor.close()

    def _roll_back(self, cursor: Any) -> None:
        conn = self._conn
        try:
            if conn is not None and conn.driver_connection.in_transaction:  # type: ignore[union-attr]
                cursor.execute("ROLLBACK")
        except Exception:
            self._discard()

    def _discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
            finally:
                self._conn = None

    def close(self) -> None:
        """Give the connection back to the pool (before the engine is disposed)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
