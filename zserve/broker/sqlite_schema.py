"""The SQLite broker's tables, and how it writes jobs and events as JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from zserve.events import Event
from zserve.records import FINISHED, JobRecord

__all__ = ["DONE", "OPEN", "SCHEMA", "changes_json", "dump", "encode"]

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
