"""The model-like step of ``scripts/bench-batching`` (issue 13): a call costs 2 ms plus 0.05 ms
per item, spent outside the GIL (``time.sleep``, as native model code would), and one model per
worker runs one call at a time (``MODEL``, a lock): without it, unbatched calls would overlap in
the step threads and batching would have nothing to gain. The same model served two ways: one
call per request (``unbatched``), and calls of concurrent requests gathered (``batched``).
"""

from __future__ import annotations

import threading
import time

from zserve import pipeline, step

CALL_S = 0.002
ITEM_S = 0.00005
MAX_SIZE = 32
WAIT_MS = 5.0

#: The worker's one model, which runs one call at a time (to become a per-worker Resource).
MODEL = threading.Lock()


def infer(model: threading.Lock, xs: list[float]) -> list[float]:
    with model:
        time.sleep(CALL_S + ITEM_S * len(xs))
    return [2 * x for x in xs]


@step(batch=MAX_SIZE, batch_wait_ms=WAIT_MS)
def predict_batch(x: list[float]) -> list[float]:
    return infer(MODEL, x)


@step
def predict(x: float) -> float:
    return infer(MODEL, [x])[0]


@pipeline
def batched(x: float = 1.0) -> float:
    return predict_batch(x)


@pipeline
def unbatched(x: float = 1.0) -> float:
    return predict(x)
