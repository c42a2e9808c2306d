"""Writing a job's end: retried while the broker cannot be written for now (a full disk), so
that no job stays ``running`` for ever because one write failed. It gives up only when the
broker is lost for good (it said why once) or when the worker is stopping and out of time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from zserve.errors import BrokerUnavailable

__all__ = ["RETRY_MAX_S", "write_end"]

logger = logging.getLogger("zserve.jobs")

#: The first wait between two tries, doubled each time up to RETRY_MAX_S.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0


async def write_end(
    write: Callable[[], Awaitable[object]], job_id: str, out_of_time: Callable[[], bool]
) -> None:
    """Call ``write`` until it succeeds, the broker is lost, or ``out_of_time()``."""
    delay, waited = RETRY_FIRST_S, False
    while True:
        try:
            await write()
        except BrokerUnavailable as err:
            if err.lasting:
                return
            if out_of_time():
                logger.error("Job %s: its end could not be written before the worker stopped: "
                             "%s", job_id, err)  # fmt: skip
                return
            if not waited:
                logger.warning("Job %s: its end cannot be written yet; retrying", job_id)
                waited = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        if waited:
            logger.warning("Job %s: its end was written", job_id)
        return
