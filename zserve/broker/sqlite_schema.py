"""The SQLite broker's tables, how it writes jobs and events as JSON, and how a worker tells
that the server's broker file was deleted or replaced under it."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from zserve.events import Event
from zserve.records import FINISHED, JobRecord

__all__ = ["DONE", "OPEN", "SCHEMA", "changes_json", "dump", "encode", "listing", "replaced"]

OPEN = "status IN ('queued', 'running')"
DONE = "status IN ('completed', 'failed', 'cancelled')"
FIELDS = frozenset(f.name for f in dataclasses.fields(JobRecord))

SCHEMA = (
    # The record is JobRecord.to_row() as JSON; the columns beside it are copies to query by.
    """CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, status TEXT NOT NULL,
    created_at REAL NOT NULL, finished_at REAL, worker TEXT NOT NULL, record TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at)",
    "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at)",
    f"CREATE INDEX IF NOT EXISTS jobs_by_finished ON jobs (finished_at, job_id) WHERE {DONE}",
    """CREATE TABLE IF NOT EXISTS events (job_id TEXT NOT NULL, seq INTEGER NOT NULL,
    type TEXT NOT NULL, ts REAL NOT NULL, step TEXT, data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS cancels (job_id TEXT PRIMARY KEY) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS leases (worker TEXT PRIMARY KEY, expires_at REAL NOT NULL)
    WITHOUT ROWID""",
)


def dump(value: Any) -> str:
    return json.dumps(value, default=repr, separators=(",", ":"))


def encode(events: Sequence[Event]) -> list[tuple[Event, str]]:
    """Events with their data as JSON, taken on the caller's side (a snapshot)."""
    return [(e, dump(e.data)) for e in events]


def changes_json(changes: dict[str, Any], *, finishing: bool) -> str:
    unknown = set(changes) - FIELDS
    if unknown or "job_id" in changes:
        raise ValueError(f"Not a changeable job field: {sorted(unknown or {'job_id'})}")
    if not finishing and changes.get("status") in FINISHED:
        raise ValueError("A job is ended by finish(), not by publishing a finished status")
    return dump(changes)


def replaced(path: str, file_id: str) -> str | None:
    """Why the file at ``path`` is not the one whose "device:inode" is ``file_id`` (deleted or
    replaced while the server ran), or None when it is."""
    try:
        st = os.stat(path)
        found = f"{st.st_dev}:{st.st_ino}"
    except OSError:
        found = "gone"
    if found == file_id:
        return None
    return (
        f"The job broker file {path} was deleted or replaced while the server ran: async and "
        "streamed jobs are refused rather than answered from two files. Restart the server "
        "(`zserve stop`, then `zserve start`)"
    )


def listing(
    status: str | None, before: tuple[float, str] | None, limit: int
) -> tuple[str, list[Any]]:
    """The query of a page of jobs newest first (by created_at, then job_id), after ``before``."""
    where: list[str] = []
    args: list[Any] = []
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if before is not None:
        where.append("(created_at < ? OR (created_at = ? AND job_id < ?))")
        args += [before[0], before[0], before[1]]
    sql = "SELECT record FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    return sql + " ORDER BY created_at DESC, job_id DESC LIMIT ?", [*args, limit]
