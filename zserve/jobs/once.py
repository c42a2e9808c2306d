"""``submit_once``: an async or streamed job submitted under an idempotency key
(``Idempotency-Key``), so that a retried submit returns the first job instead of starting another,
whichever worker or host answers it: the broker holds the key (``Broker.create``)."""

from __future__ import annotations

from typing import Any

from zserve.broker.base import IdempotencyKey, KeyHeld
from zserve.engine.capture import RequestCapture
from zserve.errors import BrokerUnavailable, IdempotencyKeyReused
from zserve.jobs.manager import JobManager
from zserve.records import JobMode, JobRecord

__all__ = ["submit_once"]


async def submit_once(
    jobs: JobManager,
    idempotency: IdempotencyKey,
    params: dict[str, Any],
    timeout_s: float | None,
    mode: JobMode = "async",
    capture: RequestCapture | None = None,
) -> tuple[JobRecord, bool]:
    """``JobManager.submit`` under an idempotency key: (the new job, False); or, when a job the
    broker still has holds the key, (that job as it is now, True), and nothing starts. The key
    sent with another request (its fingerprint differs) is IdempotencyKeyReused."""
    for _ in range(3):  # a holder that vanished was pruned meanwhile: its key is free again
        try:
            return await jobs.submit(params, timeout_s, mode, capture, idempotency), False
        except KeyHeld as held:
            if held.fingerprint != idempotency.fingerprint:
                raise IdempotencyKeyReused.of(idempotency.key, held.job_id) from None
            first = await jobs.broker.get(held.job_id)
            if first is not None:
                return first, True
    raise BrokerUnavailable("The job that holds the idempotency key could not be read: retry",
                            lasting=False)  # fmt: skip
