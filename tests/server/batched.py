"""Pipelines with a batched step, for the server and end-to-end batching tests.

Each answer says how many calls its batch held, so that a client (even of another process)
sees how the calls were gathered. ``GATE`` holds a batch that holds the call with ``x == 0``
until a test of the same process opens it (it is open otherwise).
"""

from __future__ import annotations

import threading
from typing import Any

from zserve import pipeline, step

GATE = threading.Event()
GATE.set()


@step(batch=8, batch_wait_ms=5)
def scale(x: list[int]) -> list[Any]:
    if 0 in x:
        GATE.wait(30)
    return [
        ValueError(f"cannot scale {v}") if v == 13 else {"y": v * 2, "batch": len(x)} for v in x
    ]


@step
def label(scaled: dict[str, int]) -> dict[str, int]:
    return {**scaled, "labelled": 1}


@pipeline
def scaling(x: int) -> dict[str, int]:
    return label(scale(x))
