"""``RunKeeper``: what a job does with tracked mode. It makes a run's recorder, refuses work
whose record is required while the store fails, and hands finished records to the store's
writer. The jobs layer never imports the store: the server passes in ``write_run`` (awaits the
commit, raises ``StoreUnavailable``) and ``store_failing`` (the store's error, or None)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from zserve.engine.capture import RequestCapture
from zserve.engine.recorder import RunRecorder
from zserve.engine.tracking import Tracking
from zserve.errors import StoreUnavailable
from zserve.records import JobError, JobRecord, RunRecord

__all__ = ["MUST_RECORD", "RunKeeper", "store_unavailable"]

#: Modes whose record is the point of the request: it fails when the record cannot be stored.
MUST_RECORD = frozenset({"metadata", "full"})


def store_unavailable(err: StoreUnavailable | str) -> JobError:
    return {"reason": "store_unavailable", "message": str(err)}


class RunKeeper:
    def __init__(
        self,
        tracking: Tracking,
        write_run: Callable[[RunRecord], Awaitable[None]] | None = None,
        store_failing: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.tracking = tracking
        self.write_run = write_run
        self.store_failing = store_failing

    def failing_for(self, capture: str) -> str | None:
        """Why a job of this capture mode cannot run now (its record could not be stored)."""
        return self.store_failing() if capture in MUST_RECORD else None

    def refuse_unrecordable(self, capture: RequestCapture) -> None:
        """Refuse, before it runs, a request whose record is required while the store fails:
        no side effects to retry, no silent loss."""
        if (reason := self.failing_for(capture.mode)) is not None:
            raise StoreUnavailable(
                f"{reason}. Capture {capture.mode!r} needs the store: retry when it is back, "
                "or ask for capture_override mode 'none'"
            )

    def recorder(self, capture: RequestCapture, job_id: str) -> RunRecorder | None:
        return self.tracking.recorder(capture, job_id)

    async def keep(self, record: JobRecord, recorder: RunRecorder | None) -> None:
        """Store the run ``recorder`` built, if it is to be kept; ``record.run_id`` says where.
        Raises StoreUnavailable when the store failed and the mode requires the record; a
        ``sampled`` or ``errors_only`` record is dropped instead (the writer counts it)."""
        if recorder is None or recorder.record is None or self.write_run is None:
            return
        run = recorder.record
        try:
            await self.write_run(run)
        except StoreUnavailable:
            if run.capture in MUST_RECORD:
                raise
            return
        record.run_id = run.run_id

    def keep_later(self, record: JobRecord, recorder: RunRecorder | None) -> None:
        """Store a cancelled run without waiting: the task that ran it is going away."""
        if recorder is not None and recorder.record is not None:
            future = asyncio.ensure_future(self.keep(record, recorder))
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
