"""The Redis broker's blocking reads, each on one connection of its own per worker, whatever
the number of stream clients: the ``Tailer`` serves every ``wait`` with one ``XREAD BLOCK`` over
all the streams waited on, and ``listen`` is a pub/sub subscriber (cancel requests for this
worker's jobs).

Neither ever holds a connection of the command pool: a blocked read never starves commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from zserve.errors import BrokerUnavailable

__all__ = ["BLOCK_SLICE_S", "DOWN", "PING_S", "SHORT_SLICE_S", "Tailer", "listen"]

logger = logging.getLogger("zserve.jobs")

#: Errors of a Redis that cannot be reached, or does not answer in time.
DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
#: The tailer's XREAD blocks at most this long (its socket timeout is the command timeout more).
BLOCK_SLICE_S = 10.0
#: ... or this long, where Redis refuses CLIENT ID or CLIENT UNBLOCK (an ACL): a new waiter then
#: waits up to this long for the next XREAD.
SHORT_SLICE_S = 0.1
#: A quiet pub/sub connection sends a PING this often, and counts as lost when nothing came
#: back for 1.5 times as long.
PING_S = 5.0
#: The longest pause before a lost pub/sub connection is made again.
MAX_PAUSE_S = 2.0


def _once(**options: Any) -> dict[str, Any]:
    """Client options for a connection whose failures the caller handles: no retry (a retry
    would make a new connection behind its back), no health-check PING of its own."""
    return {**options, "retry": Retry(NoBackoff(), 0), "health_check_interval": 0}


@dataclass(eq=False)
class _Waiter:
    after: int
    got: asyncio.Future[list[Any]]


class Tailer:
    """Every ``wait`` of one broker, served by one task and one connection.

    A waiter registers (stream key, after) and gets the stream entries with a seq above its
    ``after``; the task runs ``XREAD BLOCK`` over every stream waited on, each from the smallest
    ``after`` of its waiters, and hands the entries out. A waiter the XREAD in flight does not
    cover (a new stream, or an earlier ``after``) wakes it with ``CLIENT UNBLOCK`` sent on the
    command pool, so it never waits out the block slice. When the connection fails, it is made
    again once at once (Redis restarted, a proxy closed it); when that fails too, every waiter
    gets the error (the broker makes it ``BrokerUnavailable``), never a hang. Where an ACL
    refuses CLIENT ID or CLIENT UNBLOCK, the XREADs block in short slices instead.
    """

    def __init__(self, client_url: str, commands: aioredis.Redis, **options: Any) -> None:
        #: the one connection (``single_connection_client``) the XREADs block on
        self._conn = aioredis.from_url(
            client_url, single_connection_client=True, **_once(**options)
        )
        self._commands = commands
        self._block_ms = int(BLOCK_SLICE_S * 1000)
        #: whether Redis lets the tailer be woken with CLIENT UNBLOCK
        self._unblockable = True
        self._waiters: dict[str, set[_Waiter]] = {}
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._kicker: asyncio.Task[None] | None = None
        #: ``CLIENT ID`` of the connection, read again after each (re)connect
        self._client_id: int | None = None
        #: what the XREAD in flight asks for (stream key -> after), None between reads
        self._reading: dict[str, int] | None = None
        #: whether a waiter came that the XREAD in flight does not cover
        self._behind = False
        self._closed = False

    @property
    def waiting(self) -> int:
        """How many waiters there are."""
        return sum(len(waiters) for waiters in self._waiters.values())

    async def wait(self, stream: str, after: int, timeout: float) -> list[Any]:
        """The entries ``(id, fields)`` of ``stream`` with a seq above ``after``, once there
        is one; [] when ``timeout`` passes first."""
        if self._closed:
            raise BrokerUnavailable("The job broker is closed", lasting=False)
        if timeout <= 0:
            return []
        waiter = _Waiter(after, asyncio.get_running_loop().create_future())
        self._waiters.setdefault(stream, set()).add(waiter)
        self._woken.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        reading = self._reading
        if reading is not None and after < reading.get(stream, after + 1):
            self._behind = True
            if self._kicker is None or self._kicker.done():
                self._kicker = asyncio.ensure_future(self._kick())
        try:
            return await asyncio.wait_for(waiter.got, timeout)
        except TimeoutError:
            return []
        finally:
            self._drop(stream, waiter)
            if waiter.got.done() and not waiter.got.cancelled():
                waiter.got.exception()  # retrieved, even by a caller cancelled meanwhile

    async def close(self) -> None:
        self._closed = True
        self._woken.set()
        tasks = [t for t in (self._task, self._kicker) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail(BrokerUnavailable("The job broker is closed", lasting=False))
        await self._conn.aclose()

    # -- the task -------------------------------------------------------------------------------

    async def _run(self) -> None:
        retried = False
        while not self._closed:
            if not self._waiters:
                self._woken.clear()
                await self._woken.wait()
                continue
            try:
                got = await self._read()
                _cancelled_still()
                self._deliver(got)
            except Exception as exc:
                self._client_id = None
                if isinstance(exc, RedisConnectionError) and not retried:
                    retried = True  # the entries wait in their streams: nothing is lost
                    continue
                if not isinstance(exc, DOWN):
                    logger.error("Tailing job events failed", exc_info=exc)
                self._fail(exc)
            retried = False

    async def _read(self) -> Any:
        """One XREAD over every stream waited on (on a connection whose id is known)."""
        if self._client_id is None and self._unblockable:
            try:
                self._client_id = int(await self._conn.client_id())
            except ResponseError as exc:
                self._refused(exc)
        self._reading = {k: min(w.after for w in ws) for k, ws in self._waiters.items()}
        self._behind = False
        ids = {key: f"{after}-0" for key, after in self._reading.items()}
        try:
            return await self._conn.xread(ids, block=self._block_ms)  # type: ignore[arg-type]
        finally:
            self._reading = None

    def _refused(self, exc: Exception) -> None:
        if self._unblockable:
            logger.warning(
                "Redis refuses CLIENT ID or CLIENT UNBLOCK (%s): job streams are tailed in "
                "slices of %s s instead",
                exc,
                SHORT_SLICE_S,
            )
        self._unblockable = False
        self._client_id = None
        self._block_ms = int(SHORT_SLICE_S * 1000)

    def _fail(self, exc: Exception) -> None:
        """Every waiter gets ``exc`` (a copy each, for a Redis that is down: the broker makes
        it ``BrokerUnavailable``)."""
        waiters = [w for ws in self._waiters.values() for w in ws]
        self._waiters.clear()
        for waiter in waiters:
            if not waiter.got.done():
                copy = type(exc)(str(exc)) if isinstance(exc, DOWN) else exc
                waiter.got.set_exception(copy)

    def _deliver(self, got: Any) -> None:
        if not got:  # the slice passed, or CLIENT UNBLOCK
            return
        # RESP2: [[stream, entries]]; RESP3: {stream: [entries]}
        found = ((k, v[0]) for k, v in got.items()) if isinstance(got, dict) else got
        for key, entries in found:
            seqs = [(int(entry[0].split("-")[0]), entry) for entry in entries]
            for waiter in list(self._waiters.get(key, ())):
                mine = [entry for seq, entry in seqs if seq > waiter.after]
                if mine:
                    self._drop(key, waiter)
                    if not waiter.got.done():
                        waiter.got.set_result(mine)

    def _drop(self, stream: str, waiter: _Waiter) -> None:
        waiters = self._waiters.get(stream)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[stream]

    async def _kick(self) -> None:
        """Wake the XREAD in flight for a waiter it does not cover: unblocked, it returns
        nothing at once and the next XREAD includes the waiter. ``CLIENT UNBLOCK`` may reach
        Redis before the XREAD does, and unblock nothing: then try again a little later, until
        one of them happens."""
        pause = 0.001
        while self._behind and self._reading is not None and self._client_id is not None:
            try:
                if await self._commands.client_unblock(self._client_id):
                    return
            except ResponseError as exc:
                self._refused(exc)
                return
            except Exception:  # Redis is away: the task finds out itself
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)


async def listen(
    client_url: str, channel: str, on_message: Callable[[str], None], **options: Any
) -> None:
    """Call ``on_message`` with every message published on ``channel``, until cancelled, on a
    connection of its own; a lost connection is made again, with the subscription, after a
    pause (messages published meanwhile are lost: the caller polls for them too)."""
    client = aioredis.from_url(client_url, **_once(**options))
    pause = 0.05
    try:
        while True:
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                pause = 0.05
                await _read(pubsub, on_message)
            except DOWN as exc:
                logger.debug("The subscription to %s was lost: %s", channel, exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE_S)
    finally:
        await client.aclose()


async def _read(pubsub: Any, on_message: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    heard = loop.time()
    while True:
        message = await pubsub.get_message(timeout=PING_S)
        _cancelled_still()
        now = loop.time()
        if message is None:
            if now - heard > 1.5 * PING_S:
                raise RedisTimeoutError("Redis did not answer a PING on a pub/sub connection")
            await pubsub.ping()
            continue
        heard = now
        if message["type"] == "message":
            try:
                on_message(message["data"])
            except Exception:
                logger.exception("A message on %s was not handled", message["channel"])


def _cancelled_still() -> None:
    """Raise the cancel of this task that redis-py swallowed (it can, when the cancel comes
    just as a reply arrives: the command then returns as if nothing happened)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
