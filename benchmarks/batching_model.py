"""The model-like step of ``scripts/bench-batching`` (issue 13): a call costs 2 ms plus 0.05 ms
per item, spent outside the GIL (``time.sleep``, as native model code would), and one model per
worker runs one call at a time (the ``model`` resource, built once per worker, holds a lock):
without it, unbatched calls would overlap in
the step threads and batching would have nothing to gain. The same model served two ways: one
call per request (``unbatched``), and calls of concurrent requests gathered (``batched``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from zserve import Resource, pipeline, step

CALL_S = 0.002
ITEM_S = 0.00005
MAX_SIZE = 32
WAIT_MS = 5.0


class Model:
    """A model that runs one call at a time, as one model instance on one device does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, xs: list[float]) -> list[float]:
        with self.lock:
            time.sleep(CALL_S + ITEM_S * len(xs))
        return [2 * x for x in xs]


def load_model() -> Iterator[Model]:
    yield Model()  # once per worker; nothing to release after the yield


@step(batch=MAX_SIZE, batch_wait_ms=WAIT_MS)
def predict_batch(x: list[float], model: Model = Resource(load_model)) -> list[float]:
    return model(x)


@step
def predict(x: float, model: Model = Resource(load_model)) -> float:
    return model([x])[0]


@pipeline
def batched(x: float = 1.0) -> float:
    return predict_batch(x)


@pipeline
def unbatched(x: float = 1.0) -> float:
    return predict(x)
