"""The broker contract (zserve/broker/base.py), checked against every implementation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.broker.conftest import Harness, event, job
from zserve.broker import Broker
from zserve.events import (
    JOB_CANCELLED,
    JOB_COMPLETED,
    JOB_FAILED,
    JOB_QUEUED,
    JOB_STARTED,
    STEP_CHUNK,
    STEP_COMPLETED,
    STEP_STARTED,
    TERMINAL,
    Event,
)
from zserve.records import JobRecord

pytestmark = pytest.mark.anyio


async def running(broker: Broker, job_id: str, worker: str = "w1", **fields: Any) -> None:
    """A job that has been created and picked up by ``worker`` (events 1 and 2)."""
    await broker.create(job(job_id, **fields), event(JOB_QUEUED, job_id))
    await broker.publish(
        job_id, [event(JOB_STARTED, job_id)], {"status": "running", "worker": worker}
    )


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


async def test_create_stores_the_job_and_its_first_event_with_seq_1(brokers: Harness) -> None:
    record = JobRecord(
        "j1",
        1000.5,
        mode="stream",
        capture="none",
        steps=[{"name": "a", "status": "pending", "duration_ms": None}],
    )

    async def scenario(b: Broker) -> tuple[Event, JobRecord | None, list[Event]]:
        first = await b.create(record, event(JOB_QUEUED, "j1"))
        return first, await b.get("j1"), await b.events("j1")

    first, stored, events = await brokers.run(scenario)
    assert (first.type, first.seq, first.job_id) == (JOB_QUEUED, 1, "j1")
    assert stored == record
    assert events == [first]
    assert await brokers.run(lambda b: b.get("nope")) is None


async def test_publish_assigns_the_next_seqs_in_order_and_applies_changes(brokers: Harness) -> None:
    steps = [{"name": "fetch", "status": "running", "duration_ms": None}]

    async def scenario(b: Broker) -> tuple[list[Event], list[Event], JobRecord | None, list[Event]]:
        await b.create(job("j1"), event(JOB_QUEUED, "j1"))
        changes = {"status": "running", "started_at": 1234.25, "worker": "w1", "steps": steps}
        placed = await b.publish(
            "j1", [event(JOB_STARTED, "j1"), event(STEP_STARTED, "j1", "fetch")], changes
        )
        more = await b.publish(
            "j1", [event(STEP_CHUNK, "j1", "fetch", chunk={"text": "hé", "n": [1, 2.5, None]})]
        )
        return placed, more, await b.get("j1"), await b.events("j1")

    placed, more, stored, events = await brokers.run(scenario)
    assert seqs(placed) == [2, 3] and [e.type for e in placed] == [JOB_STARTED, STEP_STARTED]
    assert seqs(more) == [4]
    assert stored is not None
    assert (stored.status, stored.started_at, stored.worker, stored.steps) == (
        "running", 1234.25, "w1", steps
    )  # fmt: skip
    assert seqs(events) == [1, 2, 3, 4]
    assert [e.type for e in events] == [JOB_QUEUED, JOB_STARTED, STEP_STARTED, STEP_CHUNK]
    assert events[2].step == "fetch" and events[0].step is None
    assert events[3].data == {"chunk": {"text": "hé", "n": [1, 2.5, None]}}
    assert events[1:] == placed + more


async def test_publish_with_changes_only_and_to_an_unknown_job(brokers: Harness) -> None:
    async def scenario(
        b: Broker,
    ) -> tuple[list[Event], list[Event], JobRecord | None, JobRecord | None]:
        await b.create(job("j1"), event(JOB_QUEUED, "j1"))
        changes_only = await b.publish("j1", [], {"worker": "w9"})
        unknown = await b.publish("ghost", [event(JOB_STARTED, "ghost")], {"status": "running"})
        return changes_only, unknown, await b.get("j1"), await b.get("ghost")

    changes_only, unknown, stored, ghost = await brokers.run(scenario)
    assert changes_only == [] and stored is not None and stored.worker == "w9"
    assert unknown == [] and ghost is None


async def test_publish_after_finish_is_a_no_op(brokers: Harness) -> None:
    async def scenario(b: Broker) -> tuple[list[Event], JobRecord | None, list[Event]]:
        await running(b, "j1")
        await b.finish(
            "j1", event(JOB_COMPLETED, "j1", outputs={"output": 1}), {"finished_at": 50.0}
        )
        late = await b.publish(
            "j1", [event(STEP_CHUNK, "j1", "a", chunk="x")], {"worker": "w2", "status": "running"}
        )
        return late, await b.get("j1"), await b.events("j1")

    late, stored, events = await brokers.run(scenario)
    assert late == []
    assert stored is not None and (stored.status, stored.worker) == ("completed", "w1")
    assert [e.type for e in events] == [JOB_QUEUED, JOB_STARTED, JOB_COMPLETED]


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
async def test_finish_sets_status_from_the_terminal_type_and_appends_it(
    brokers: Harness, terminal: str
) -> None:
    error = {"reason": "step_failed", "step": "a", "message": "boom"}

    async def scenario(b: Broker) -> tuple[Event | None, JobRecord | None, list[Event]]:
        await running(b, "j1")
        changes = {"finished_at": 99.5, "outputs": {"output": [1, 2]}, "error": error}
        placed = await b.finish("j1", event(terminal, "j1", extra="x"), changes)
        return placed, await b.get("j1"), await b.events("j1")

    placed, stored, events = await brokers.run(scenario)
    assert placed is not None and (placed.type, placed.seq, placed.data) == (
        terminal,
        3,
        {"extra": "x"},
    )
    assert stored is not None
    assert stored.status == TERMINAL[terminal] and stored.finished
    assert (stored.finished_at, stored.outputs, stored.error) == (99.5, {"output": [1, 2]}, error)
    assert events[-1] == placed and seqs(events) == [1, 2, 3]


async def test_finish_is_compare_and_set(brokers: Harness) -> None:
    async def scenario(
        b: Broker,
    ) -> tuple[Event | None, Event | None, JobRecord | None, list[Event]]:
        await running(b, "j1")
        first = await b.finish(
            "j1", event(JOB_COMPLETED, "j1"), {"finished_at": 10.0, "outputs": {"output": 1}}
        )
        lost = {"reason": "worker_lost", "message": "gone"}
        second = await b.finish("j1", event(JOB_FAILED, "j1"), {"finished_at": 20.0, "error": lost})
        return first, second, await b.get("j1"), await b.events("j1")

    first, second, stored, events = await brokers.run(scenario)
    assert first is not None and first.seq == 3
    assert second is None
    assert stored is not None
    assert (stored.status, stored.finished_at, stored.outputs, stored.error) == (
        "completed",
        10.0,
        {"output": 1},
        None,
    )
    assert [e.type for e in events] == [JOB_QUEUED, JOB_STARTED, JOB_COMPLETED]


async def test_concurrent_finishes_have_one_winner(brokers: Harness) -> None:
    async def scenario(b: Broker) -> tuple[list[Event | None], list[Event]]:
        await running(b, "j1")
        racers = [
            b.finish("j1", event(t, "j1", racer=i), {"finished_at": float(i)})
            for i, t in enumerate([JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED] * 3)
        ]
        return list(await asyncio.gather(*racers)), await b.events("j1")

    results, events = await brokers.run(scenario)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].seq == 3
    assert [e for e in events if e.terminal] == winners


async def test_finish_a_queued_job_and_an_unknown_one(brokers: Harness) -> None:
    async def scenario(b: Broker) -> tuple[Event | None, Event | None, JobRecord | None]:
        await b.create(job("j1"), event(JOB_QUEUED, "j1"))
        cancelled = await b.finish("j1", event(JOB_CANCELLED, "j1"), {"finished_at": 5.0})
        unknown = await b.finish("ghost", event(JOB_FAILED, "ghost"), {})
        return cancelled, unknown, await b.get("ghost")

    cancelled, unknown, ghost = await brokers.run(scenario)
    assert cancelled is not None and cancelled.seq == 2
    assert unknown is None and ghost is None


async def test_events_after(brokers: Harness) -> None:
    async def scenario(b: Broker) -> list[list[int]]:
        await running(b, "j1")
        await b.publish("j1", [event(STEP_CHUNK, "j1", "a", chunk=i) for i in range(3)])
        return [seqs(await b.events("j1", after)) for after in (0, 1, 4, 5, 9)] + [
            seqs(await b.events("ghost"))
        ]

    assert await brokers.run(scenario) == [[1, 2, 3, 4, 5], [2, 3, 4, 5], [5], [], [], []]


async def test_wait_returns_at_once_when_there_are_events(brokers: Harness) -> None:
    async def scenario(b: Broker) -> list[Event]:
        await running(b, "j1")
        # A wait that did wait would outlive this bound by far.
        return await asyncio.wait_for(b.wait("j1", 1, timeout=60), 10)

    assert [(e.seq, e.type) for e in await brokers.run(scenario)] == [(2, JOB_STARTED)]


async def test_wait_times_out_with_nothing(brokers: Harness) -> None:
    async def scenario(b: Broker) -> list[Event]:
        await running(b, "j1")
        return await b.wait("j1", 2, timeout=0.1)

    assert await brokers.run(scenario) == []


async def test_wait_on_an_unknown_job_returns_nothing_without_waiting(brokers: Harness) -> None:
    async def scenario(b: Broker) -> list[Event]:
        return await asyncio.wait_for(b.wait("ghost", 0, timeout=60), 10)

    assert await brokers.run(scenario) == []


async def test_wait_wakes_up_when_another_task_publishes_or_finishes(brokers: Harness) -> None:
    async def scenario(b: Broker) -> tuple[list[Event], list[Event], list[Event]]:
        await running(b, "j1")
        waiters = [asyncio.create_task(b.wait("j1", 2, timeout=60)) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert not any(w.done() for w in waiters)
        await b.publish("j1", [event(STEP_STARTED, "j1", "a")])
        got = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        assert all(g == got[0] for g in got)
        ending = asyncio.create_task(b.wait("j1", 3, timeout=60))
        await asyncio.sleep(0.1)
        assert not ending.done()
        await b.finish("j1", event(JOB_COMPLETED, "j1"), {"finished_at": 1.0})
        return got[0], await asyncio.wait_for(ending, 10), await b.events("j1")

    woken, ended, events = await brokers.run(scenario)
    assert [(e.seq, e.type) for e in woken] == [(3, STEP_STARTED)]
    assert [(e.seq, e.type) for e in ended] == [(4, JOB_COMPLETED)]
    assert events[2:] == woken + ended


async def test_wait_does_not_return_empty_early(brokers: Harness) -> None:
    """A change that brings no event after ``after`` is no reason to stop waiting."""

    async def scenario(b: Broker) -> tuple[list[Event], list[Event]]:
        await running(b, "j1")
        plain = asyncio.create_task(b.wait("j1", 2, timeout=30))
        ahead = asyncio.create_task(b.wait("j1", 3, timeout=30))  # e.g. a replay from seq 3
        await asyncio.sleep(0.05)
        await b.publish("j1", [], {"steps": [{"name": "a", "status": "running"}]})
        await b.publish("j1", [event(STEP_STARTED, "j1", "a")])  # seq 3: not beyond 3
        await asyncio.sleep(0.2)
        await b.publish("j1", [event(STEP_COMPLETED, "j1", "a")])  # seq 4
        return await asyncio.wait_for(plain, 10), await asyncio.wait_for(ahead, 10)

    plain, ahead = await brokers.run(scenario)
    assert seqs(plain) in ([3], [3, 4])
    assert seqs(ahead) == [4]


async def test_list_jobs_newest_first_with_status_filter_and_limit(brokers: Harness) -> None:
    async def scenario(b: Broker) -> dict[str, list[str]]:
        for i in (3, 1, 4, 0, 2):  # created out of order
            await b.create(job(f"j{i}", created_at=1000.0 + i), event(JOB_QUEUED, f"j{i}"))
        await b.publish("j1", [], {"status": "running"})
        await b.publish("j3", [], {"status": "running"})
        await b.finish("j4", event(JOB_COMPLETED, "j4"), {"finished_at": 2000.0})

        async def ids(status: str | None = None, limit: int = 100) -> list[str]:
            return [j.job_id for j in await b.list_jobs(status, limit)]

        return {
            "all": await ids(),
            "two": await ids(limit=2),
            "running": await ids("running"),
            "queued": await ids("queued", 1),
            "completed": await ids("completed"),
            "failed": await ids("failed"),
            "none": await ids(limit=0),
        }

    assert await brokers.run(scenario) == {
        "all": ["j4", "j3", "j2", "j1", "j0"],
        "two": ["j4", "j3"],
        "running": ["j3", "j1"],
        "queued": ["j2"],
        "completed": ["j4"],
        "failed": [],
        "none": [],
    }


async def test_list_jobs_by_id_prefix_is_exact_and_case_sensitive(brokers: Harness) -> None:
    async def scenario(b: Broker) -> dict[str, list[str]]:
        for i, job_id in enumerate(("abc1", "abc2", "abd3", "ABC4", "a%c5", "a_c6")):
            await b.create(job(job_id, created_at=1000.0 + i), event(JOB_QUEUED, job_id))

        async def ids(prefix: str, status: str | None = None) -> list[str]:
            return [j.job_id for j in await b.list_jobs(status, 100, prefix=prefix)]

        return {
            "abc": await ids("abc"),
            "ab": await ids("ab"),
            "abc2": await ids("abc2"),
            "wild": await ids("a%"),
            "under": await ids("a_"),
            "none": await ids("x"),
            "queued": await ids("ab", "queued"),
            "running": await ids("ab", "running"),
        }

    assert await brokers.run(scenario) == {
        "abc": ["abc2", "abc1"],
        "ab": ["abd3", "abc2", "abc1"],
        "abc2": ["abc2"],
        "wild": ["a%c5"],
        "under": ["a_c6"],
        "none": [],
        "queued": ["abd3", "abc2", "abc1"],
        "running": [],
    }


async def test_list_jobs_pages_by_time_then_id_and_gives_summaries(brokers: Harness) -> None:
    async def scenario(b: Broker) -> tuple[list[list[str]], list[str], Any]:
        for name in ("a", "b", "c", "d"):  # same time: the id orders them
            await b.create(job(name, created_at=1000.0), event(JOB_QUEUED, name))
        await b.create(job("e", created_at=1001.0), event(JOB_QUEUED, "e"))
        await b.finish("e", event(JOB_COMPLETED, "e"), {"outputs": {"big": "x" * 10_000}})
        pages, before = [], None
        while True:
            page = await b.list_jobs(limit=2, before=before)
            if not page:
                break
            pages.append([j.job_id for j in page])
            before = (page[-1].created_at, page[-1].job_id)
        done = await b.list_jobs("completed", before=(1001.0, "f"))
        full = await b.get("e")
        return pages, [j.job_id for j in done], (done[0].outputs, full and full.outputs)

    pages, done, outputs = await brokers.run(scenario)
    assert pages == [["e", "d"], ["c", "b"], ["a"]]
    assert done == ["e"]
    assert outputs == (None, {"big": "x" * 10_000})  # listings leave outputs out


async def test_cancel_requests(brokers: Harness) -> None:
    async def scenario(b: Broker) -> list[set[str]]:
        await running(b, "a")
        await running(b, "b")
        await b.create(job("q"), event(JOB_QUEUED, "q"))
        await b.create(job("done"), event(JOB_QUEUED, "done"))
        await b.finish("done", event(JOB_COMPLETED, "done"), {"finished_at": 1.0})
        seen = [await b.cancel_requested(["a", "b", "q", "done", "ghost"])]
        for job_id in ("a", "q", "done", "ghost"):
            await b.request_cancel(job_id)
        await b.request_cancel("a")  # twice is once
        seen.append(await b.cancel_requested(["a", "b", "q", "done", "ghost"]))
        seen.append(await b.cancel_requested(["b"]))
        seen.append(await b.cancel_requested([]))
        # The owner ends the job: its cancel request goes with it.
        await b.finish("a", event(JOB_CANCELLED, "a"), {"finished_at": 2.0})
        seen.append(await b.cancel_requested(["a", "q"]))
        return seen

    assert await brokers.run(scenario) == [set(), {"a", "q"}, set(), set(), {"q"}]


async def test_heartbeat_keeps_leases_and_expired_finds_the_jobs_of_dead_workers(
    brokers: Harness,
) -> None:
    async def scenario(b: Broker) -> tuple[float, list[list[str]]]:
        await running(b, "alive", worker="w1")
        await running(b, "dead", worker="w2")
        await b.create(job("unowned"), event(JOB_QUEUED, "unowned"))
        await running(b, "finished", worker="w2")
        await b.finish("finished", event(JOB_FAILED, "finished"), {"finished_at": 1.0})
        await b.heartbeat("w1", 60)
        await b.heartbeat("w2", 60)
        await b.heartbeat("w2", 5)  # renewed with a shorter ttl: the latest wins
        now = time.time()
        ids = [sorted(j.job_id for j in await b.expired(t)) for t in (now, now + 30, now + 120)]
        await b.heartbeat("w2", 600)  # it came back
        ids.append(sorted(j.job_id for j in await b.expired(now + 120)))
        return now, ids

    _, ids = await brokers.run(scenario)
    assert ids == [[], ["dead"], ["alive", "dead"], ["alive"]]


async def test_expired_counts_a_worker_without_any_lease_as_dead(brokers: Harness) -> None:
    async def scenario(b: Broker) -> list[str]:
        await running(b, "orphan", worker="never-beat")
        await b.heartbeat("w1", 60)
        return [j.job_id for j in await b.expired(time.time())]

    assert await brokers.run(scenario) == ["orphan"]


async def test_prune_by_age(brokers: Harness) -> None:
    async def scenario(b: Broker) -> tuple[int, list[str], list[list[int]]]:
        for i, finished_at in enumerate([100.0, 200.0, 300.0]):
            await running(b, f"f{i}", created_at=float(i))
            await b.finish(f"f{i}", event(JOB_COMPLETED, f"f{i}"), {"finished_at": finished_at})
        await running(b, "old-but-running", created_at=0.5)
        await running(b, "no-finish-time", created_at=0.7)  # counts as finished at 0
        await b.finish("no-finish-time", event(JOB_FAILED, "no-finish-time"), {})
        dropped = await b.prune(before=250.0, keep=100)
        left = sorted(j.job_id for j in await b.list_jobs())
        return (
            dropped,
            left,
            [seqs(await b.events(j)) for j in ("f0", "f1", "f2", "old-but-running")],
        )

    dropped, left, events = await brokers.run(scenario)
    assert dropped == 3
    assert left == ["f2", "old-but-running"]
    assert events == [[], [], [1, 2, 3], [1, 2]]


async def test_prune_by_count_keeps_the_most_recently_finished(brokers: Harness) -> None:
    async def scenario(b: Broker) -> tuple[int, list[str], list[int], list[str], int]:
        # Created in the opposite order to finished: prune goes by finished_at.
        for i in range(5):
            await running(b, f"f{i}", created_at=100.0 - i)
            await b.finish(f"f{i}", event(JOB_COMPLETED, f"f{i}"), {"finished_at": 10.0 + i})
        await b.create(job("q"), event(JOB_QUEUED, "q"))
        dropped = await b.prune(before=0.0, keep=2)
        left = sorted(j.job_id for j in await b.list_jobs())
        gone = [len(await b.events(f"f{i}")) for i in range(3)]
        again = await b.prune(before=0.0, keep=2)
        everything = await b.prune(before=1e12, keep=0)
        return dropped, left, gone, [j.job_id for j in await b.list_jobs()], again + 10 * everything

    dropped, left, gone, finally_left, counts = await brokers.run(scenario)
    assert dropped == 3 and left == ["f3", "f4", "q"] and gone == [0, 0, 0]
    assert counts == 0 + 10 * 2
    assert finally_left == ["q"]


async def test_records_are_snapshots(brokers: Harness) -> None:
    """What a broker hands out or is given is data: it does not change behind anyone's back."""

    async def scenario(b: Broker) -> list[Any]:
        record = job("j1")
        await b.create(record, event(JOB_QUEUED, "j1"))
        record.status = "failed"  # the caller's record, not the broker's
        before = await b.get("j1")
        assert before is not None
        steps = [{"name": "a", "status": "running"}]
        await b.publish("j1", [], {"status": "running", "steps": steps})
        steps[0]["status"] = "completed"  # as the engine does with its own record's steps
        after = await b.get("j1")
        assert after is not None
        after.steps.clear()  # a reader's copy
        listed = (await b.list_jobs())[0]
        listed.worker = "someone"
        again = await b.get("j1")
        assert again is not None
        return [before.status, after.status, again.steps, again.worker]

    assert await brokers.run(scenario) == [
        "queued",
        "running",
        [{"name": "a", "status": "running"}],
        "",
    ]


async def test_step_events_keep_their_step_and_data(brokers: Harness) -> None:
    async def scenario(b: Broker) -> list[Event]:
        await running(b, "j1")
        await b.publish(
            "j1",
            [
                event(STEP_STARTED, "j1", "s"),
                event(STEP_COMPLETED, "j1", "s", duration_ms=1.5, nested={"a": [1, {"b": None}]}),
            ],
        )
        return await b.events("j1", 2)

    started, completed = await brokers.run(scenario)
    assert (started.step, started.data) == ("s", {})
    assert (completed.step, completed.data) == (
        "s",
        {"duration_ms": 1.5, "nested": {"a": [1, {"b": None}]}},
    )


async def test_count_by_status(brokers: Harness) -> None:
    async def scenario(b: Broker) -> dict[str, int]:
        for i in range(3):
            await b.create(job(f"j{i}", float(i)), event(JOB_QUEUED, f"j{i}"))
        await b.finish("j0", event("job.completed", "j0"), {"finished_at": 2.0})
        return await b.count_by_status()

    assert await brokers.run(scenario) == {"queued": 2, "completed": 1}
