"""Pipelines with resources, for the resource tests (sdk, server, e2e).

``counted``'s factory is steered by the environment, so that it works in a server process too:
``ZSERVE_TEST_RESOURCE_LOG`` is a file each build (``build PID``) and teardown
(``teardown PID``) appends a line to; ``ZSERVE_TEST_RESOURCE_GATE``, a file the build waits for;
``ZSERVE_TEST_RESOURCE_FAIL``, a message the build raises ``OSError`` with. In-process, ``GATE``
(a ``threading.Event``) holds the build until it is set.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from zserve import Resource, pipeline, step

LOG_ENV = "ZSERVE_TEST_RESOURCE_LOG"
GATE_ENV = "ZSERVE_TEST_RESOURCE_GATE"
FAIL_ENV = "ZSERVE_TEST_RESOURCE_FAIL"
#: In-process: the build of ``counted``'s resource waits for this event when it is set.
GATE: threading.Event | None = None
#: What the factories of ``kinds`` did, in order.
EVENTS: list[str] = []


def _log(line: str) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(f"{line} {os.getpid()}\n")


def load_counted() -> Iterator[dict[str, Any]]:
    _log("build")
    if GATE is not None and not GATE.wait(60):
        raise TimeoutError("the test never opened the gate")
    gate = os.environ.get(GATE_ENV)
    deadline = time.monotonic() + 60
    while gate and not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never made the gate file")
        time.sleep(0.02)
    failure = os.environ.get(FAIL_ENV)
    if failure:
        raise OSError(failure)
    yield {"built_by": os.getpid()}
    _log("teardown")


@step
def whoami(x: int, model: dict[str, Any] = Resource(load_counted)) -> dict[str, Any]:
    return {"x": x, "pid": os.getpid(), "built_by": model["built_by"], "model_id": id(model)}


@pipeline
def counted(x: int = 1) -> dict[str, Any]:
    return whoami(x)


@step
def slow_job(seconds: float, model: dict[str, Any] = Resource(load_counted)) -> float:
    time.sleep(seconds)
    EVENTS.append("step done")
    return seconds


@pipeline
def slow(seconds: float = 0.5) -> float:
    return slow_job(seconds)


# -- every kind of factory ------------------------------------------------------------------------


def sync_fn() -> str:
    EVENTS.append("build sync")
    return "sync"


async def async_fn() -> str:
    EVENTS.append("build async")
    return "async"


def gen_fn() -> Iterator[str]:
    EVENTS.append("build generator")
    yield "generator"
    EVENTS.append("teardown generator")


async def agen_fn() -> AsyncIterator[str]:
    EVENTS.append("build async-generator")
    yield "async-generator"
    EVENTS.append("teardown async-generator")


@contextmanager
def cm_fn() -> Iterator[str]:
    EVENTS.append("build context-manager")
    yield "context-manager"
    EVENTS.append("teardown context-manager")


@asynccontextmanager
async def acm_fn() -> AsyncIterator[str]:
    EVENTS.append("build async-context-manager")
    yield "async-context-manager"
    EVENTS.append("teardown async-context-manager")


@step
def sync_kinds(
    x: int,
    a: str = Resource(sync_fn),
    b: str = Resource(gen_fn),
    c: str = Resource(cm_fn),
) -> list[Any]:
    return [x, a, b, c]


@step
async def async_kinds(
    first: list[Any],
    d: str = Resource(async_fn),
    e: str = Resource(agen_fn),
    f: str = Resource(acm_fn),
    again: str = Resource(gen_fn),  # the same factory as sync_kinds' ``b``: the same instance
) -> list[Any]:
    return [*first, d, e, f, again]


@pipeline
def kinds(x: int) -> list[Any]:
    return async_kinds(sync_kinds(x))


# -- one instance for several steps ------------------------------------------------------------


def shared_model() -> dict[str, int]:
    EVENTS.append("build shared")
    return {"calls": 0}


@step
def first_use(x: int, model: dict[str, int] = Resource(shared_model)) -> int:
    return id(model)


@step
def second_use(x: int, model: dict[str, int] = Resource(shared_model)) -> int:
    return id(model)


@pipeline
def shared(x: int) -> dict[str, int]:
    return {"first": first_use(x), "second": second_use(x)}


# -- a pipeline that calls no step is its own step ----------------------------------------------


@pipeline
def implicit(x: int, model: str = Resource(sync_fn)) -> str:
    return f"{model}:{x}"


# -- a factory that fails after another was built -----------------------------------------------


def broken() -> str:
    raise OSError("weights.bin not found")


@step
def uses_broken(x: int, ok: str = Resource(gen_fn), bad: str = Resource(broken)) -> str:
    return ok + bad


@pipeline
def fails(x: int = 1) -> str:
    return uses_broken(x)


#: In-process: ``held_batch`` waits for this event (set by the test) before it returns.
BATCH_GATE = threading.Event()


@step(batch=4, batch_wait_ms=1)
def held_batch(x: list[int], model: dict[str, Any] = Resource(load_counted)) -> list[int]:
    EVENTS.append("batch started")
    if not BATCH_GATE.wait(60):
        raise TimeoutError("the test never opened the batch gate")
    _log("batch-done")  # in the log the teardown writes to: their order shows
    return x


@pipeline
def held(x: int = 1) -> int:
    return held_batch(x)
