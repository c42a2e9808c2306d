"""``RunWriter``: one thread per worker that writes recorded runs to the store.

Requests hand their ``RunRecord`` to ``write``; the thread takes everything waiting and commits it
in one transaction (group commit), so concurrent tracked requests share a commit instead of
paying one each, and the event loop never waits on the database. With ``flush="sync"`` a request
awaits its commit (a crash after the response loses nothing); with ``"background"`` it does not,
and the records wait in a bounded queue: what does not fit is dropped, counted and logged.

While the store fails, ``failing`` holds the reason: the server refuses the requests that must be
recorded before running them. The thread checks the store again every second until it recovers.
A ``metadata`` or ``full`` run that ran and could not be written because a store server went
away (PostgreSQL restarting: its check fails too) is not dropped: it is written once the store
is back, for up to ``retry_s`` (with sync flush its request waits for that). A ``sampled`` or
``errors_only`` run, one the store refuses while it works, or one a SQLite file cannot take (a
file that fails waits for a person, not for a server to come back: ``retry_s`` 0) is dropped at
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from zserve.errors import StoreUnavailable
from zserve.jobs.keeper import MUST_RECORD
from zserve.records import RunRecord

__all__ = ["RunStore", "RunWriter"]

logger = logging.getLogger("zserve.runs")

#: Seconds between checks of a failing store (and between checks of a healthy one).
CHECK_S = 1.0
#: Seconds between two prunes of expired runs, at most.
PRUNE_S = 300.0
#: Seconds a required run waits for a store server that went away to come back, at most.
RETRY_S = 10.0


class RunStore(Protocol):
    """What the writer needs of the store (``zserve.store.Store`` is one)."""

    def add_runs(self, records: Sequence[RunRecord]) -> None: ...
    def check(self) -> None: ...
    def prune_runs(
        self, older_than: float, deployment_id: str | None = None, dry_run: bool = False
    ) -> list[str]: ...
    def close(self) -> None: ...


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"] | None
_STOP = object()


class RunWriter:
    def __init__(
        self,
        open_store: Callable[[], RunStore],
        *,
        flush: str = "sync",
        max_queue: int = 10_000,
        max_batch: int = 256,
        on_commit: Callable[[Sequence[RunRecord], float], None] | None = None,
        on_drop: Callable[[RunRecord, str], None] | None = None,
        ttl_s: float | None = None,
        deployment_id: str | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self._open_store = open_store
        self.flush = flush
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.on_drop = on_drop
        #: Runs of ``deployment_id`` older than this are pruned now and then (ZSERVE_RUN_TTL).
        self.ttl_s = ttl_s
        self.deployment_id = deployment_id
        self.retry_s = retry_s
        self._next_prune = 0.0
        #: The store's error while it fails (None while it works).
        self.failing: str | None = None
        #: The thread has opened and checked the store at least once (and ``failing`` says
        #: how that went): before, nothing is known of it.
        self.checked = False
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._store: RunStore | None = None
        self._lock = threading.Lock()
        self._checked = 0.0
        #: required runs waiting for the store to come back, and when each is given up
        self._pending: list[tuple[RunRecord, _Waiter]] = []
        self._give_up: dict[str, float] = {}

    # -- the request side (event loop) --------------------------------------------------------

    def start(self) -> None:
        """Start the thread (once); it opens the store itself, off the event loop."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="zserve-runs", daemon=True)
                self._thread.start()

    async def write(self, record: RunRecord) -> None:
        """Hand ``record`` to the writer. With sync flush, return once it is committed (raises
        ``StoreUnavailable`` if it could not be); with background flush, at once."""
        if self._thread is None:
            self.start()
        if self.flush == "background":
            if self._queue.qsize() >= self.max_queue:
                self._dropped(record, "queue_full")
                return
            self._queue.put((record, None))
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.put((record, (loop, done)))
        await done

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), then stop the thread. Blocks:
        call it off the event loop."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error(
                "The run writer did not finish within %.0f s: queued runs are lost", timeout
            )
            return
        self._thread = None

    # -- the thread ---------------------------------------------------------------------------

    def _main(self) -> None:
        self._check()  # open the store now: a failing store is known before a request needs it
        try:
            while True:
                try:
                    first = self._queue.get(timeout=self._idle_timeout())
                except queue.Empty:
                    if self.failing:
                        self._check()
                    self._retry()
                    self._prune_if_due()
                    continue
                batch: list[tuple[RunRecord, _Waiter]] = []
                stop = first is _STOP
                if not stop:
                    batch.append(first)  # type: ignore[arg-type]
                stop = self._take(batch) or stop
                if batch:
                    self._write(batch)
                self._retry(final=stop and self._queue.empty())
                if stop and self._queue.empty():
                    return
        finally:
            if self._store is not None:
                try:
                    self._store.close()
                except Exception:  # closing must not hide why the thread ended
                    logger.exception("Closing the run store failed")

    def _take(self, batch: list[tuple[RunRecord, _Waiter]]) -> bool:
        """Move what waits in the queue into ``batch`` (up to ``max_batch``); True if the stop
        marker was among it."""
        stop = False
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                continue
            batch.append(item)  # type: ignore[arg-type]
        return stop

    def _idle_timeout(self) -> float | None:
        """How long the thread may sleep waiting for records."""
        if self.failing or self._pending:
            return CHECK_S
        if self.ttl_s is not None:
            return max(0.0, self._next_prune - time.monotonic())
        return None

    def _prune_if_due(self) -> None:
        if self.ttl_s is None or self.failing or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + min(PRUNE_S, self.ttl_s / 2)
        if self._store is None:
            return
        try:
            gone = self._store.prune_runs(time.time() - self.ttl_s, self.deployment_id)
        except Exception as exc:
            logger.error("Pruning runs older than %.0f s failed: %s", self.ttl_s, _one_line(exc))
            return
        if gone:
            logger.info(
                "Pruned %d run(s) older than %.0f s (ZSERVE_RUN_TTL)", len(gone), self.ttl_s
            )

    def _check(self) -> None:
        """Open or check the store; keep ``failing`` true to what it says."""
        try:
            if self._store is None:
                self._store = self._open_store()
            self._store.check()
        except Exception as exc:
            self._fail(exc)
            self.checked = True
            return
        self.checked = True
        if self.failing is not None:
            logger.warning("The run store works again")
        self.failing = None
        self._checked = time.monotonic()

    def _write(self, batch: list[tuple[RunRecord, _Waiter]]) -> None:
        records = [record for record, _ in batch]
        error: StoreUnavailable | None = None
        if self.failing is not None or time.monotonic() - self._checked > CHECK_S:
            self._check()
        start = time.perf_counter()
        gone = True  # the store is away (rather than refusing these records)
        try:
            if self._store is None or self.failing is not None:
                raise StoreUnavailable(self.failing or "The run store could not be opened")
            try:
                self._store.add_runs(records)
            except Exception:
                self._check()  # the store, or these records?
                gone = self.failing is not None
                raise
        except Exception as exc:
            error = self._fail(exc)
        else:
            if self.on_commit is not None:
                self.on_commit(records, time.perf_counter() - start)
        now = time.monotonic()
        retry = error is not None and gone and self.retry_s > 0
        answered: list[_Waiter] = []
        for record, waiter in batch:
            if (
                retry
                and record.capture in MUST_RECORD
                and self._give_up.setdefault(record.run_id, now + self.retry_s) > now
            ):
                self._pending.append((record, waiter))  # written once the store is back
                continue
            self._give_up.pop(record.run_id, None)
            if error is not None:  # lost, whoever waits for it: counted and logged
                self._dropped(record, "store_unavailable")
            answered.append(waiter)
        _answer(answered, error)

    def _retry(self, final: bool = False) -> None:
        """Write the runs that wait for the store once it is back; drop those whose time is up
        (all of them when the writer stops: ``final``)."""
        if not self._pending:
            return
        if self.failing is None:
            pending, self._pending = self._pending, []
            self._write(pending)  # what fails again waits again, until its time is up
        now = time.monotonic()
        due = [p for p in self._pending if final or self._give_up[p[0].run_id] <= now]
        if not due:
            return
        gone = {id(record) for record, _ in due}
        self._pending = [p for p in self._pending if id(p[0]) not in gone]
        for record, _ in due:
            self._give_up.pop(record.run_id, None)
            self._dropped(record, "store_unavailable")
        error = StoreUnavailable(self.failing or "The run store could not be written")
        _answer([waiter for _, waiter in due], error)

    def _fail(self, exc: Exception) -> StoreUnavailable:
        error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(_one_line(exc))
        if self.failing is None:
            logger.error("The run store cannot be written: %s", error)
        self.failing = str(error)
        return error

    def _dropped(self, record: RunRecord, reason: str) -> None:
        logger.warning("Run %s of job %s not recorded: %s", record.run_id, record.job_id, reason)
        if self.on_drop is not None:
            self.on_drop(record, reason)


def _answer(waiters: list[_Waiter], error: StoreUnavailable | None) -> None:
    """Tell each waiting request (on its own event loop) how its write went."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        if waiter is not None:
            by_loop.setdefault(waiter[0], []).append(waiter[1])
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future[None]], error: StoreUnavailable | None) -> None:
    for future in futures:
        if future.done():  # its request was cancelled meanwhile
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"The run store cannot be written: {type(exc).__name__}: {text[0] if text else ''}"
