"""The SQLite broker's tables and connections, how it writes jobs and events as JSON, how a worker
tells that the server's broker file was deleted or replaced under it, and which errors mean the
file cannot be written for want of storage."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from zserve.broker.base import KeyHeld
from zserve.events import Event
from zserve.records import FINISHED, JobRecord

__all__ = [
    "DONE",
    "LAYOUT",
    "OPEN",
    "SCHEMA",
    "OtherLayout",
    "append_events",
    "changes_json",
    "claim_key",
    "connect",
    "dump",
    "encode",
    "for_want_of_storage",
    "listing",
    "make_layout",
    "process_alive",
    "prune_finished",
    "record_if_open",
    "replaced",
    "save_if_open",
    "started",
]

OPEN = "status IN ('queued', 'running')"
DONE = "status IN ('completed', 'failed', 'cancelled')"
FIELDS = frozenset(f.name for f in dataclasses.fields(JobRecord))

#: Idempotency keys (since layout 2): one job per key, forgotten with the job.
IDEM = (
    """CREATE TABLE IF NOT EXISTS idem (key TEXT PRIMARY KEY, job_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS idem_by_job ON idem (job_id)",
)
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
    # born: when the worker's process started (psutil), to tell it from a later one of its pid
    """CREATE TABLE IF NOT EXISTS leases (worker TEXT PRIMARY KEY, expires_at REAL NOT NULL,
    born REAL) WITHOUT ROWID""",
    *IDEM,
)
#: The file's layout (``PRAGMA user_version``); a file of another layout is not used, except
#: that of an earlier one this version upgrades (``UPGRADES``).
LAYOUT = 2
#: layout -> the statements that bring a file of that layout to the next one
UPGRADES: dict[int, tuple[str, ...]] = {1: IDEM}
#: SQLite's primary result codes of a write that failed because of where the file lives.
STORAGE_CODES = frozenset(
    {5, 6, 7, 8, 10, 13, 14}
)  # BUSY LOCKED NOMEM READONLY IOERR FULL CANTOPEN


class OtherLayout(Exception):
    """The broker file was made by a zserve with another layout."""


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
    status: str | None, before: tuple[float, str] | None, limit: int, prefix: str | None = None
) -> tuple[str, list[Any]]:
    """The query of a page of jobs newest first (by created_at, then job_id), after ``before``,
    of the ids that start with ``prefix``."""
    where: list[str] = []
    args: list[Any] = []
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if prefix is not None:  # not LIKE: that ignores case and reads % and _ as wildcards
        where.append("substr(job_id, 1, ?) = ?")
        args += [len(prefix), prefix]
    if before is not None:
        where.append("(created_at < ? OR (created_at = ? AND job_id < ?))")
        args += [before[0], before[0], before[1]]
    sql = "SELECT record FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    return sql + " ORDER BY created_at DESC, job_id DESC LIMIT ?", [*args, limit]


def connect(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) on a WAL file."""
    db = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    # Switching a new file to WAL fails at once ("database is locked", no busy handler)
    # while another process opens it too: retry for as long as the busy timeout.
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"cannot put {path} in WAL mode")
        time.sleep(0.01)
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def for_want_of_storage(exc: BaseException) -> bool:
    """A write that failed because of where the file lives, not because of what was written:
    a full disk, an I/O error, a read-only file, a lock held too long. Anything else (a
    corrupt file, an SQL or integrity error) is not retried."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in STORAGE_CODES


def make_layout(db: sqlite3.Connection, path: str) -> None:
    """Create the tables of a new file; check the layout of an existing one, upgrading an
    earlier layout in place (its jobs are kept). An unversioned file (from before layouts) is
    made anew: its jobs belong to servers that no longer run."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    while version in UPGRADES:  # in the transaction that checks it: one process upgrades
        for statement in UPGRADES[version]:
            db.execute(statement)
        version += 1
        db.execute(f"PRAGMA user_version = {version}")
    if version == LAYOUT:
        return
    if version != 0:
        raise OtherLayout(
            f"The job broker file {path} was made by another zserve version (layout {version}; "
            f"this one reads {LAYOUT}): stop that version's servers of this deployment and "
            "delete the file, or serve with that version"
        )
    for table in ("jobs", "events", "cancels", "leases", "idem"):
        db.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in SCHEMA:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {LAYOUT}")


def process_alive(worker: str, born: float | None) -> bool:
    """Whether the process of ``worker`` ("<pid>-<random>", a lease's ``born``) still runs on
    this host: the SQLite broker is one host's, so a live process is never declared lost."""
    import psutil

    pid = worker.partition("-")[0]
    if born is None or not pid.isdigit():
        return False
    try:
        started: float = psutil.Process(int(pid)).create_time()
    except psutil.Error:
        return False
    return abs(started - born) < 0.01


def started() -> float:
    """When this process started (psutil's create time): a lease's ``born``."""
    import psutil

    return float(psutil.Process().create_time())


# Write ops: run inside the broker's write transaction, given its connection.


def claim_key(db: sqlite3.Connection, job_id: str, key: str, fingerprint: str) -> None:
    """Give the idempotency key to a new job, unless a job still here holds it (``KeyHeld``).
    A key whose job is gone (forgotten by a version that did not prune keys) is taken over."""
    sql = "SELECT i.job_id, i.fingerprint FROM idem i JOIN jobs j USING (job_id) WHERE i.key = ?"
    held = db.execute(sql, (key,)).fetchone()
    if held is not None:
        raise KeyHeld(*held)
    db.execute("INSERT OR REPLACE INTO idem VALUES (?, ?, ?)", (key, job_id, fingerprint))


def record_if_open(db: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    row = db.execute(f"SELECT record FROM jobs WHERE job_id = ? AND {OPEN}", (job_id,))
    found = row.fetchone()
    return None if found is None else dict(json.loads(found[0]))


def save_if_open(db: sqlite3.Connection, row: dict[str, Any]) -> bool:
    """Write the record back, compare-and-set: only while the job is queued or running."""
    sql = "UPDATE jobs SET status = ?, created_at = ?, finished_at = ?, worker = ?, record = ?"
    values = [row[k] for k in ("status", "created_at", "finished_at", "worker")]
    cursor = db.execute(f"{sql} WHERE job_id = ? AND {OPEN}", (*values, dump(row), row["job_id"]))
    return cursor.rowcount == 1


def append_events(
    db: sqlite3.Connection, job_id: str, encoded: list[tuple[Event, str]]
) -> list[Event]:
    """Append events with the next seqs (the caller holds the write lock)."""
    last = db.execute("SELECT MAX(seq) FROM events WHERE job_id = ?", (job_id,)).fetchone()[0]
    placed = [e.with_seq((last or 0) + i) for i, (e, _) in enumerate(encoded, 1)]
    rows = [
        (job_id, p.seq, p.type, p.ts, p.step, data)
        for p, (_, data) in zip(placed, encoded, strict=True)
    ]
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
    return placed


#: Finished before a time (or at an unknown time), and the rest beyond the latest ``keep``.
_FINISHED = f"SELECT job_id FROM jobs INDEXED BY jobs_by_finished WHERE {DONE} AND"
PRUNE = (
    f"{_FINISHED} (finished_at IS NULL OR finished_at < ?) UNION ALL SELECT job_id FROM"
    f" ({_FINISHED} finished_at >= ? ORDER BY finished_at DESC LIMIT -1 OFFSET ?)"
)


def prune_finished(db: sqlite3.Connection, before: float, keep: int) -> int:
    doomed = db.execute(PRUNE, (before, before, max(0, keep))).fetchall()
    for table in ("events", "cancels", "idem", "jobs"):
        db.executemany(f"DELETE FROM {table} WHERE job_id = ?", doomed)
    return len(doomed)
