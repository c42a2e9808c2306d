"""Admission slots: at most ``limit`` jobs run at once; the others wait their turn.

Queueing policy: sync requests and background jobs (async and streamed) wait in two queues,
each first in, first out. When a slot frees up and both wait, it goes to the queue that did not
get the previous one, so a burst of a thousand streamed jobs cannot starve sync requests (or the
reverse): each kind gets at least every other slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from zserve.errors import JobCancelled, Overloaded

__all__ = ["Slots"]


class Slots:
    """At most ``limit`` holders at once; the others wait in order and are counted (``waiting``)
    for the 429 check. Taking a free slot does not suspend (the hot path of a sync invoke)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        #: waiters of sync requests, and of background jobs
        self._queues: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(),
            deque(),
        )
        self._next = 0  # the queue whose turn it is when both wait

    @property
    def waiting(self) -> int:
        return len(self._queues[0]) + len(self._queues[1])

    @property
    def free(self) -> bool:
        """A slot can be taken now, without waiting."""
        return self.running < self.limit and not self.waiting

    def admit(self, starting: int, max_queue: int) -> None:
        """Refuse new work (429) when every slot is taken and ``max_queue`` jobs wait already
        (``starting``: jobs submitted that have not reached the slots yet)."""
        if self.running >= self.limit and self.waiting + starting >= max_queue:
            raise Overloaded(
                f"The server is at its limit ({self.limit} running, {max_queue} queued): "
                "retry later",
                retry_after=1,
            )

    def take(self) -> bool:
        """Take a slot if one is free now (True), without waiting."""
        if self.running < self.limit and not self._queues[0] and not self._queues[1]:
            self.running += 1
            return True
        return False

    async def acquire(self, sync: bool = False) -> None:
        if self.take():
            return
        queue = self._queues[0 if sync else 1]
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter  # resolved by release(), which hands its slot over
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it already
                    queue.remove(waiter)
            raise

    def release(self) -> None:
        for which in (self._next, self._next ^ 1):
            queue = self._queues[which]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    self._next = which ^ 1  # the other queue's turn next
                    waiter.set_result(None)  # the slot passes straight to the next in line
                    return
        self.running -= 1

    async def acquire_while_wanted(
        self, job_id: str, gone: Callable[[], Awaitable[object]]
    ) -> None:
        """Wait for a sync slot unless the client leaves first (``gone`` returns): then
        JobCancelled, without a slot."""
        slot = asyncio.ensure_future(self.acquire(sync=True))
        left = asyncio.ensure_future(gone())
        try:
            await asyncio.wait((slot, left), return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            if not slot.done():
                slot.cancel()  # acquire() passes a slot handed over meanwhile on to the next
                with contextlib.suppress(asyncio.CancelledError):
                    await slot
        if not slot.done() or slot.cancelled():
            raise JobCancelled(f"Job {job_id}: its client went away while it waited for a slot")
        slot.result()
