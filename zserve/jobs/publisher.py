"""``EventPublisher``: the events of one job, handed to the broker in order and in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from zserve import events as ev
from zserve.broker.base import Broker
from zserve.errors import BrokerUnavailable
from zserve.records import JobRecord

__all__ = ["MAX_PENDING_EVENTS", "EventPublisher"]

#: Events of one job kept while the broker cannot take them (Redis unreachable); one more
#: fails the job (``on_overflow``) and is dropped, with those after it.
MAX_PENDING_EVENTS = 10_000


class EventPublisher:
    """Events of one job, handed to the broker in order, in batches (one write per batch): a
    burst of chunks from a generator step costs few writes. The job's step states travel with
    each batch. Events the broker cannot take for now (a full disk) are kept, in order, for the
    next try, up to ``MAX_PENDING_EVENTS``: beyond, ``on_overflow`` is told (once) and the
    events are dropped. ``on_gone`` is told (once) when the broker refuses the events because
    the job ended elsewhere: it was taken from this worker (its lease ran out)."""

    def __init__(
        self,
        broker: Broker,
        record: JobRecord,
        *,
        on_overflow: Callable[[], None] = lambda: None,
        on_gone: Callable[[], None] = lambda: None,
    ) -> None:
        self.broker = broker
        self.record = record
        self.pending: list[ev.Event] = []
        self.flushing: asyncio.Task[None] | None = None
        self.on_overflow = on_overflow
        self.on_gone = on_gone
        self.overflowed = False

    def put(self, event: ev.Event) -> None:
        """Take an event (on the event loop); it is published soon, after those before it."""
        if len(self.pending) >= MAX_PENDING_EVENTS:
            if not self.overflowed:
                self.overflowed = True
                self.on_overflow()
            return
        self.pending.append(event)
        if self.flushing is None:
            self.flushing = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            while self.pending:
                await self._publish_pending()
        except BrokerUnavailable as err:
            if err.lasting:
                self.pending.clear()  # nowhere to keep them; the broker said why once
            # else they wait for the next event, or for the job's end (retried until written)
        finally:
            self.flushing = None

    async def _publish_pending(self) -> None:
        batch, self.pending = self.pending, []
        try:
            written = await self.broker.publish(
                self.record.job_id, batch, {"steps": self.record.steps}
            )
        except BrokerUnavailable as err:
            if not err.lasting:
                self.pending[:0] = batch  # nothing was written: they go first next time
            raise
        if batch and not written:
            self.on_gone()

    async def drain(self) -> None:
        """Publish everything taken so far; return once it is with the broker."""
        while self.flushing is not None:
            await asyncio.shield(self.flushing)
        if self.pending:
            await self._publish_pending()
