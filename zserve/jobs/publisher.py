"""``EventPublisher``: the events of one job, handed to the broker in order and in batches."""

from __future__ import annotations

import asyncio

from zserve import events as ev
from zserve.broker.base import Broker
from zserve.errors import BrokerUnavailable
from zserve.records import JobRecord

__all__ = ["EventPublisher"]


class EventPublisher:
    """Events of one job, handed to the broker in order, in batches (one write per batch): a
    burst of chunks from a generator step costs few writes. The job's step states travel with
    each batch. Events the broker cannot take for now (a full disk) are kept, in order, for the
    next try."""

    def __init__(self, broker: Broker, record: JobRecord) -> None:
        self.broker = broker
        self.record = record
        self.pending: list[ev.Event] = []
        self.flushing: asyncio.Task[None] | None = None

    def put(self, event: ev.Event) -> None:
        """Take an event (on the event loop); it is published soon, after those before it."""
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
            await self.broker.publish(self.record.job_id, batch, {"steps": self.record.steps})
        except BrokerUnavailable as err:
            if not err.lasting:
                self.pending[:0] = batch  # nothing was written: they go first next time
            raise

    async def drain(self) -> None:
        """Publish everything taken so far; return once it is with the broker."""
        while self.flushing is not None:
            await asyncio.shield(self.flushing)
        if self.pending:
            await self._publish_pending()
