"""A worker process for the multi-process broker test ("spawn" imports it by name)."""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from typing import Any

from zserve.broker import open_broker
from zserve.events import JOB_COMPLETED, JOB_FAILED, JOB_QUEUED, JOB_STARTED, STEP_CHUNK, Event
from zserve.records import JobRecord

SHARED_OWNER = 0


def shared_id(k: int) -> str:
    return f"shared-{k}"


def own_id(index: int, k: int) -> str:
    return f"p{index}-j{k}"


def hammer(url: str, index: int, plan: dict[str, int], barrier: Any, results: Any) -> None:
    """Process body: run the scenario, put its report (or the traceback) on ``results``."""
    try:
        report = asyncio.run(_hammer(url, index, plan, barrier))
    except BaseException:
        report = {"index": index, "error": traceback.format_exc()}
    results.put(report)


def _event(type_: str, job_id: str, **data: Any) -> Event:
    return Event(type_, job_id, time.time(), "s" if type_ == STEP_CHUNK else None, data)


async def _hammer(url: str, index: int, plan: dict[str, int], barrier: Any) -> dict[str, Any]:
    broker = open_broker(url)
    worker = f"w{index}"
    # Everyone opens the (fresh) file at once: schema creation and the switch to WAL race too.
    await asyncio.to_thread(barrier.wait, 60)
    await broker.start()
    try:
        for k in range(plan["own_jobs"]):
            job_id = own_id(index, k)
            await broker.create(JobRecord(job_id, time.time()), _event(JOB_QUEUED, job_id))
        if index == SHARED_OWNER:
            for k in range(plan["shared_jobs"]):
                record = JobRecord(shared_id(k), time.time(), status="running", worker=worker)
                await broker.create(record, _event(JOB_QUEUED, shared_id(k)))
        await asyncio.to_thread(barrier.wait, 60)
        started = time.perf_counter()

        async def chunks(job_id: str, task: int) -> list[int]:
            """Publish chunk events one at a time (as a generator step would)."""
            seqs = []
            for i in range(plan["chunks"]):
                placed = await broker.publish(
                    job_id, [_event(STEP_CHUNK, job_id, proc=index, task=task, i=i)]
                )
                seqs += [e.seq for e in placed]
            return seqs

        async def own_job(k: int) -> dict[str, Any]:
            job_id = own_id(index, k)
            await broker.publish(
                job_id, [_event(JOB_STARTED, job_id)], {"status": "running", "worker": worker}
            )
            tasks = await asyncio.gather(*(chunks(job_id, t) for t in range(plan["tasks"])))
            end = await broker.finish(
                job_id, _event(JOB_COMPLETED, job_id, proc=index), {"finished_at": time.time()}
            )
            return {"job_id": job_id, "seqs": sorted(s for t in tasks for s in t),
                    "terminal": None if end is None else end.seq}  # fmt: skip

        async def race() -> list[dict[str, Any]]:
            """Publish to the jobs everyone shares; then, all at once, try to end each of them
            (one transaction each, in an order of this process's own): one process wins each."""
            first = await asyncio.gather(
                *(broker.publish(shared_id(k), [_event(STEP_CHUNK, shared_id(k), proc=index, i=0)])
                  for k in range(plan["shared_jobs"]))
            )  # fmt: skip
            await asyncio.to_thread(barrier.wait, 60)
            order = list(range(plan["shared_jobs"]))
            random.Random(index).shuffle(order)
            tries = []
            for k in order:
                job_id = shared_id(k)
                late = await broker.publish(job_id, [_event(STEP_CHUNK, job_id, proc=index, i=1)])
                if index == SHARED_OWNER:
                    terminal = _event(JOB_COMPLETED, job_id, proc=index)
                    changes: dict[str, Any] = {"outputs": {"output": index}}
                else:
                    terminal = _event(JOB_FAILED, job_id, proc=index)
                    changes = {"error": {"reason": "worker_lost", "message": f"seen by {worker}"}}
                end = await broker.finish(job_id, terminal, {**changes, "finished_at": time.time()})
                tries.append({"job_id": job_id, "seqs": [e.seq for e in first[k] + late],
                              "terminal": None if end is None else end.seq})  # fmt: skip
            return tries

        own, shared = await asyncio.gather(
            asyncio.gather(*(own_job(k) for k in range(plan["own_jobs"]))), race()
        )
        return {"index": index, "own": own, "shared": shared,
                "elapsed": time.perf_counter() - started}  # fmt: skip
    finally:
        await broker.close()
