"""The events of this worker's streamed invocations (``POST /invoke`` with ``Accept:
text/event-stream``), kept in its memory so that ``GET /stream/{id}`` and ``WS /stream`` can
attach to one: they replay what it sent so far, numbered as on its own answer (1, 2, 3...),
then follow it live up to the same terminal event.

A ``Feed`` numbers each event as it is made (the step tracker hands them over on the loop) and
wakes the answers that follow it, the invoking one among them. Only the worker that runs the
invocation has its feed, as only it has the sync job's record.

What is kept: the feed of a running invocation all along (there are at most as many as the
worker admits, ``ZSERVE_MAX_CONCURRENCY`` + ``ZSERVE_MAX_QUEUE``); once it has ended, while its
job's record is retained (``ZSERVE_JOB_TTL_S``, ``ZSERVE_JOB_MAX_COUNT``) and only the latest
``KEEP_ENDED`` ended feeds, ``KEEP_EVENTS`` events in all (the newest one is kept whatever its
size): older ones are forgotten first, and ``/stream/{id}`` answers for their jobs as for any
sync invoke (404).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from zserve import events as ev

__all__ = ["KEEP_ENDED", "KEEP_EVENTS", "Feed", "Feeds"]

#: At most this many ended feeds are kept...
KEEP_ENDED = 64
#: ...and at most this many of their events in all (the newest ended feed is always kept).
KEEP_EVENTS = 10_000


class Feed:
    """One streamed invocation's events, numbered 1, 2, 3..., up to its terminal one."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.events: list[ev.Event] = []
        #: no event comes any more: its terminal one was added, or it was refused (no events)
        self.ended = False
        self._changed = asyncio.Event()

    def add(self, event: ev.Event) -> None:
        """Number ``event`` and wake the followers (on the loop). Nothing is added once the
        feed has ended (a sync step cut short may still report from its thread)."""
        if self.ended:
            return
        numbered = event.with_seq(len(self.events) + 1)
        self.events.append(numbered)
        self.ended = numbered.terminal
        self._wake()

    def close(self) -> None:
        """End the feed without a terminal event (an invocation refused before it was a job)."""
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        """Returns when an event is added or the feed ends."""
        await self._changed.wait()

    async def follow(self, after: int, wait_s: float) -> AsyncIterator[ev.Event | None]:
        """The events after sequence number ``after``, as they come, up to the terminal one;
        ``None`` when ``wait_s`` passes without one (time for a keep-alive). Ends at once when
        the feed has ended and nothing is left after ``after``."""
        while True:
            while after < len(self.events):
                event = self.events[after]
                after += 1
                yield event
                if event.terminal:
                    return
            if self.ended:
                return
            try:
                async with asyncio.timeout(wait_s):
                    await self.changed()
            except TimeoutError:
                yield None


class Feeds:
    """This worker's feeds by job id: the running ones, and the latest ended ones while
    ``retained(job_id)`` (the job's record is still kept), within ``keep`` feeds and
    ``keep_events`` events."""

    def __init__(
        self,
        retained: Callable[[str], bool],
        keep: int = KEEP_ENDED,
        keep_events: int = KEEP_EVENTS,
    ) -> None:
        self.retained = retained
        self.keep = keep
        self.keep_events = keep_events
        self._running: dict[str, Feed] = {}
        self._ended: OrderedDict[str, Feed] = OrderedDict()  # oldest first
        self._ended_events = 0

    def open(self, job_id: str) -> Feed:
        feed = self._running[job_id] = Feed(job_id)
        return feed

    def ended(self, feed: Feed, keep: bool = True) -> None:
        """``feed`` has ended: keep it for late followers (unless not ``keep``: it was refused
        and never was a job), forgetting the oldest beyond the bounds."""
        self._running.pop(feed.job_id, None)
        if keep:
            self._ended[feed.job_id] = feed
            self._ended_events += len(feed.events)
        while self._ended:
            job_id = next(iter(self._ended))
            too_many = len(self._ended) > self.keep or self._ended_events > self.keep_events
            if (too_many and len(self._ended) > 1) or not self.retained(job_id):
                self._forget(job_id)
            else:
                return

    def _forget(self, job_id: str) -> None:
        feed = self._ended.pop(job_id, None)
        if feed is not None:
            self._ended_events -= len(feed.events)

    def get(self, job_id: str) -> Feed | None:
        """The feed of ``job_id`` while it can be followed: running, or ended and kept."""
        feed = self._running.get(job_id) or self._ended.get(job_id)
        if feed is None or self.retained(job_id):
            return feed
        self._forget(job_id)  # its job's record was forgotten: so is its feed
        return None

    def __len__(self) -> int:
        return len(self._running) + len(self._ended)
