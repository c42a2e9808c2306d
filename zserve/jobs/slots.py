"""Admission slots: at most ``limit`` jobs run at once; the others wait their turn in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from zserve.errors import Overloaded

__all__ = ["Slots"]


class Slots:
    """At most ``limit`` holders at once; the others wait in order and are counted (``waiting``)
    for the 429 check. Taking a free slot does not suspend (the hot path of a sync invoke)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def admit(self, starting: int, max_queue: int) -> None:
        """Refuse new work (429) when every slot is taken and ``max_queue`` jobs wait already
        (``starting``: jobs submitted that have not reached the slots yet)."""
        if self.running >= self.limit and self.waiting + starting >= max_queue:
            raise Overloaded(
                f"The server is at its limit ({self.limit} running, {max_queue} queued): "
                "retry later",
                retry_after=1,
            )

    async def acquire(self) -> None:
        if self.running < self.limit and not self._waiters:
            self.running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # resolved by release(), which hands its slot over
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it already
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.running -= 1
