"""Running a load in one client process or several (``--client-procs N``), when one process
cannot keep up with the server: each runs its share of the connections (and of the rate) on an
event loop of its own, they start measuring together (a barrier after their warm-ups), and their
tallies are merged exactly (HDR histograms add up). Ctrl-C stops them all: each returns what it
counted so far."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import time
from collections.abc import Callable, Coroutine
from typing import Any

from zserve.bench.load import LoadSpec, Tally, run_spec

__all__ = ["run_load"]

#: How long the parent waits for a client process's tally after it is due.
RESULT_GRACE_S = 30.0


def run_load(
    spec: LoadSpec, procs: int = 1, on_tick: Callable[[Tally | int], None] | None = None
) -> Tally:
    """The merged tally of ``procs`` client processes running ``spec`` (split between them).
    ``on_tick`` is told the live tally (one process) or the requests done so far (several)."""
    if procs <= 1:
        return _run(run_spec(spec, on_tick=on_tick))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    done = ctx.Value("q", 0)
    results: multiprocessing.Queue[dict[str, Any]] = ctx.Queue()
    children = [
        ctx.Process(target=_child, args=(spec.part(i, procs), barrier, done, results), daemon=True)
        for i in range(procs)
    ]
    for child in children:
        child.start()
    tallies: list[Tally] = []
    interrupted = False
    while len(tallies) < procs:
        try:
            tallies.append(Tally.from_dict(results.get(timeout=0.25)))
        except queue.Empty:
            if on_tick is not None:
                on_tick(int(done.value))
            if not any(c.is_alive() for c in children) and results.empty():
                break  # a child died without a tally
        except KeyboardInterrupt:  # the children got it too: they send what they counted
            interrupted = True
    for child in children:
        child.join(RESULT_GRACE_S)
        if child.is_alive():
            child.kill()
    merged = Tally()
    for tally in tallies:
        merged.merge(tally)
    merged.interrupted = merged.interrupted or interrupted or len(tallies) < procs
    return merged


def _run(main: Coroutine[Any, Any, Tally]) -> Tally:
    """``main`` on uvloop when it is there (uvicorn's standard extra brings it): the client's
    own time per request is part of every latency it measures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _child(spec: LoadSpec, barrier: Any, done: Any, results: Any) -> None:
    last = 0

    def counted(tally: Tally | int) -> None:
        nonlocal last
        if isinstance(tally, Tally):
            done.value += tally.done - last
            last = tally.done

    tally = Tally()
    with contextlib.suppress(KeyboardInterrupt):
        tally = _run(run_spec(spec, before_measure=barrier.wait, on_tick=counted))
    results.put(tally.to_dict())
    time.sleep(0.05)  # let the queue's feeder thread hand it over
