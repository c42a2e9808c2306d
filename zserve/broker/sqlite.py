"""The broker shared by the worker processes of one server on one host: one SQLite file (WAL).

Each worker process opens its own ``SQLiteBroker`` on the file. All of an instance's I/O runs on
one thread of its own. Writes are queued, and the writes that queue up while a transaction is in
flight are committed together in the next one (each in a savepoint of its own, so one failing
write fails alone): a burst of small publishes (token chunks) costs few commits. A job ends by
compare-and-set with its terminal event in the same transaction, so it gets exactly one terminal
event whichever process gets there first. Waiters learn of this instance's writes at once and of
other processes' writes by polling ``PRAGMA data_version`` (one cheap query per tick, shared by
all waiters): SQLite has no cross-process notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from zserve.broker.base import Broker, IdempotencyKey
from zserve.broker.sqlite_schema import (
    OPEN,
    OtherLayout,
    append_events,
    changes_json,
    claim_key,
    connect,
    dump,
    encode,
    for_want_of_storage,
    listing,
    make_layout,
    process_alive,
    prune_finished,
    record_if_open,
    replaced,
    save_if_open,
    started,
)
from zserve.errors import BrokerUnavailable
from zserve.events import TERMINAL, Event
from zserve.paths import private_file
from zserve.records import JobRecord

__all__ = ["SQLiteBroker"]

logger = logging.getLogger("zserve.jobs")

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

#: How often waiters look for other processes' writes.
POLL_S = 0.025
BUSY_TIMEOUT_MS = 5000


class SQLiteBroker(Broker):
    kind = "sqlite"
    shared = True

    def __init__(self, path: str, file_id: str | None = None) -> None:
        self.path = path
        #: "device:inode" of the file the server made: a worker that finds another file there
        #: (deleted, or replaced) refuses to use it, as every other worker does (see ``lost``)
        self.file_id = file_id
        #: Why the broker cannot be used (its file was deleted or replaced), or None.
        self.lost: str | None = None
        #: Why it cannot be written just now (a full disk...), or None: new jobs are refused
        #: meanwhile; the next write that succeeds clears it.
        self.failing: str | None = None
        #: when this process started: with the pid in its worker ids, how its leases are told
        #: from those of a later process with the same pid
        self._born = started()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="zserve-broker")
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # guards _pending and _flushing (loop thread vs I/O thread)
        self._pending: list[tuple[Op, Future[Any]]] = []
        self._flushing = False
        self._data_version = 0
        self._wakers: dict[str, asyncio.Event] = {}
        self._waiting: Counter[str] = Counter()
        self._poller: asyncio.Task[None] | None = None

    # -- on the I/O thread ----------------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("SQLiteBroker used before start() or after close()")
        return self._db

    def _check_file(self) -> None:
        """Is the file at ``path`` still the server's? Else ``lost`` says why, for good."""
        if self.file_id is not None and self.lost is None:
            self.lost = replaced(self.path, self.file_id)
            if self.lost is not None:
                logger.error("%s", self.lost)

    def _open(self) -> None:
        if self.file_id is not None:
            self._check_file()  # a restarted worker must not start a file of its own
        else:
            private_file(self.path)
        db = connect(self.path, BUSY_TIMEOUT_MS)
        self._db = db
        [(ok, error)] = self._transaction([lambda db: make_layout(db, self.path)])
        if isinstance(error, OtherLayout):
            self.lost = str(error)  # served like a lost file: sync only, async refused
            logger.error("%s", self.lost)
        elif not ok:
            raise error
        self._data_version = self._version()

    def _shut(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _transaction(self, ops: Sequence[Op]) -> list[tuple[bool, Any]]:
        """Run ``ops`` in one write transaction, each in a savepoint: (ok, result or error)."""
        db = self._conn
        outcomes: list[tuple[bool, Any]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                db.execute("SAVEPOINT op")
                try:
                    outcomes.append((True, op(db)))
                except Exception as exc:
                    if not db.in_transaction:  # SQLite rolled it all back itself (disk full)
                        raise
                    db.execute("ROLLBACK TO op")
                    outcomes.append((False, exc))
                db.execute("RELEASE op")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _flush(self) -> None:
        with self._lock:
            batch, self._pending, self._flushing = self._pending, [], False
        batch = [(op, fut) for op, fut in batch if fut.set_running_or_notify_cancel()]
        if not batch:
            return
        written = self._conn.total_changes
        try:
            outcomes = self._transaction([op for op, _ in batch])
        except Exception as exc:  # the whole transaction failed: nothing was written
            if for_want_of_storage(exc):
                self._failed(exc)
            for _, fut in batch:
                fut.set_exception(exc)
            return
        failure = next((v for ok, v in outcomes if not ok and for_want_of_storage(v)), None)
        if failure is not None:
            self._failed(failure)
        elif self.failing is not None and self._conn.total_changes != written:  # wrote again
            self.failing = None
            logger.warning("The job broker %s can be written again", self.path)
        for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _failed(self, exc: BaseException) -> None:
        if self.failing is None:
            logger.error("The job broker %s cannot be written: %s", self.path, exc)
        self.failing = (
            f"The job broker {self.path} cannot be written: {exc}. Async and streamed jobs are "
            "refused until it can (free space on its disk); jobs under way end once it can"
        )
        self.failed_at = time.monotonic()

    def _version(self) -> int:
        version: int = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return version

    def _records(self, sql: str, *args: Any) -> list[JobRecord]:
        rows = self._conn.execute(sql, args).fetchall()
        return [JobRecord.from_row(json.loads(r[0])) for r in rows]

    def _events(self, job_id: str, after: int) -> list[Event]:
        sql = "SELECT seq, type, ts, step, data FROM events WHERE job_id = ? AND seq > ?"
        rows = self._conn.execute(sql + " ORDER BY seq", (job_id, after))
        return [Event(t, job_id, ts, step, json.loads(d), seq) for seq, t, ts, step, d in rows]

    def _poll(self, job_id: str, after: int) -> tuple[bool, list[Event]]:
        """(whether the job exists, its events after ``after``)."""
        found = self._events(job_id, after)
        if found:
            return True, found
        exists = self._conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return exists is not None, []

    # -- on the event loop ----------------------------------------------------------------------

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        if self.lost is not None:
            raise BrokerUnavailable(self.lost)
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def problem(self) -> str | None:
        return self.lost or self.failing

    async def _write(self, op: Callable[[sqlite3.Connection], T], new_job: bool = False) -> T:
        """Queue a write for the next transaction (FIFO with every read submitted after it).
        A write that fails for want of storage raises BrokerUnavailable (not lasting); while
        that is so, a new job is refused without trying."""
        if self.lost is not None:
            raise BrokerUnavailable(self.lost)
        if new_job and self.failing is not None:
            raise BrokerUnavailable(self.failing, lasting=False)
        fut: Future[Any] = Future()
        with self._lock:
            self._pending.append((op, fut))
            if not self._flushing:
                self._flushing = True
                self._executor.submit(self._flush)
        try:
            result: T = await asyncio.wrap_future(fut)
        except sqlite3.Error as exc:
            if not for_want_of_storage(exc):
                raise
            raise BrokerUnavailable(self.failing or str(exc), lasting=False) from None
        return result

    def _wake(self, job_id: str) -> None:
        waker = self._wakers.pop(job_id, None)
        if waker is not None:
            waker.set()

    async def _watch_others(self) -> None:
        """While anyone waits: every tick, wake all waiters if another process wrote anything."""
        while self._waiting:
            await asyncio.sleep(POLL_S)
            try:
                version = await self._read(self._version)
            except Exception:  # the waiters' own reads will raise it to their callers
                version = -1
            if version != self._data_version:
                self._data_version = version
                wakers, self._wakers = self._wakers, {}
                for waker in wakers.values():
                    waker.set()

    async def start(self) -> None:
        await self._read(self._open)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        # closing works whatever became of the file (``_read`` refuses once it is lost)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._shut)
        self._executor.shutdown()

    async def create(
        self, job: JobRecord, first: Event, idempotency: IdempotencyKey | None = None
    ) -> Event:
        row, encoded = job.to_row(), encode([first])
        values = (job.job_id, job.status, job.created_at, job.finished_at, job.worker, dump(row))

        def op(db: sqlite3.Connection) -> Event:
            if idempotency is not None:  # in the write transaction: one process at a time
                claim_key(db, job.job_id, idempotency.key, idempotency.fingerprint)
            db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?)", values)
            return append_events(db, job.job_id, encoded)[0]

        placed = await self._write(op, new_job=True)
        self._wake(job.job_id)
        return placed

    async def publish(
        self, job_id: str, events: Sequence[Event], changes: dict[str, Any] | None = None
    ) -> list[Event]:
        if any(e.terminal for e in events):
            raise ValueError("publish() takes non-terminal events; a job is ended by finish()")
        patch, encoded = changes_json(changes or {}, finishing=False), encode(events)

        def op(db: sqlite3.Connection) -> list[Event]:
            row = record_if_open(db, job_id)
            if row is None:
                return []
            if changes:
                save_if_open(db, {**row, **json.loads(patch)})
            return append_events(db, job_id, encoded)

        placed = await self._write(op)
        if placed:
            self._wake(job_id)
        return placed

    async def finish(self, job_id: str, terminal: Event, changes: dict[str, Any]) -> Event | None:
        if terminal.type not in TERMINAL:
            raise ValueError(f"{terminal.type!r} is not a terminal event")
        patch = changes_json({**changes, "status": TERMINAL[terminal.type]}, finishing=True)
        encoded = encode([terminal])

        def op(db: sqlite3.Connection) -> Event | None:
            row = record_if_open(db, job_id)
            if row is None or not save_if_open(db, {**row, **json.loads(patch)}):
                return None
            db.execute("DELETE FROM cancels WHERE job_id = ?", (job_id,))
            return append_events(db, job_id, encoded)[0]

        placed = await self._write(op)
        if placed is not None:
            self._wake(job_id)
        return placed

    async def get(self, job_id: str) -> JobRecord | None:
        found = await self._read(self._records, "SELECT record FROM jobs WHERE job_id = ?", job_id)
        return found[0] if found else None

    async def list_jobs(
        self,
        status: str | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
        *,
        prefix: str | None = None,
    ) -> list[JobRecord]:
        sql, args = listing(status, before, limit, prefix)
        return await self._read(self._summaries, sql, *args)

    def _summaries(self, sql: str, *args: Any) -> list[JobRecord]:
        return [record.summary() for record in self._records(sql, *args)]

    async def count_by_status(self) -> dict[str, int]:
        return await self._read(self._counts)

    def _counts(self) -> dict[str, int]:
        rows = self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
        return {status: count for status, count in rows}

    async def events(self, job_id: str, after: int = 0) -> list[Event]:
        return await self._read(self._events, job_id, after)

    async def wait(self, job_id: str, after: int, timeout: float) -> list[Event]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiting[job_id] += 1
        try:
            while True:
                # Registered before reading, so a write after the read cannot go unnoticed.
                waker = self._wakers.setdefault(job_id, asyncio.Event())
                exists, found = await self._read(self._poll, job_id, after)
                remaining = deadline - loop.time()
                if found or not exists or remaining <= 0:
                    return found
                if self._poller is None or self._poller.done():
                    self._poller = loop.create_task(self._watch_others())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waker.wait(), remaining)
        finally:
            self._waiting[job_id] -= 1
            if not self._waiting[job_id]:
                del self._waiting[job_id]
                self._wakers.pop(job_id, None)

    async def request_cancel(self, job_id: str) -> None:
        sql = f"INSERT OR IGNORE INTO cancels SELECT job_id FROM jobs WHERE job_id = ? AND {OPEN}"
        await self._write(lambda db: db.execute(sql, (job_id,)).rowcount)

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        sql = "SELECT job_id FROM cancels WHERE job_id IN (SELECT value FROM json_each(?))"
        rows = await self._read(lambda: self._conn.execute(sql, (dump(list(job_ids)),)).fetchall())
        return {r[0] for r in rows}

    async def heartbeat(self, worker: str, ttl: float) -> None:
        await self._read(self._check_file)  # each heartbeat looks at the file
        sql = "INSERT OR REPLACE INTO leases VALUES (?, ?, ?)"
        expires = time.time() + ttl
        await self._write(lambda db: db.execute(sql, (worker, expires, self._born)).rowcount)

    async def expired(self, now: float) -> list[JobRecord]:
        """Jobs whose owner's lease ran out, unless its process still runs (its heartbeats
        may have failed: a full disk): it is never declared lost while alive."""
        sql = (
            "SELECT j.record, l.born FROM jobs j LEFT JOIN leases l ON l.worker = j.worker"
            f" WHERE j.{OPEN} AND j.worker != '' AND (l.expires_at IS NULL OR l.expires_at < ?)"
            " ORDER BY j.created_at"
        )

        def dead() -> list[JobRecord]:
            found = [(JobRecord.from_row(json.loads(r)), born)
                     for r, born in self._conn.execute(sql, (now,))]  # fmt: skip
            return [job for job, born in found if not process_alive(job.worker, born)]

        return await self._read(dead)

    async def prune(self, before: float, keep: int) -> int:
        return await self._write(lambda db: prune_finished(db, before, keep))
