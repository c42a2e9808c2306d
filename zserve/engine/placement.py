"""Where a run of plain ``@step`` sync steps runs: adaptive placement.

A plain ``@step`` may block, so it runs in a worker thread, and the hop costs more than a short
step itself (about 40 µs of CPU a run). ``Placement`` watches a thread stage of a linear plan
(consecutive plain sync steps) in one worker: after ``PROMOTE_AFTER`` runs in a row that each
took under ``SHORT_S``, the stage runs on the event loop instead; the first run there that takes
``LONG_S`` or more sends it back to threads for good (in that worker). So one call per stage per
worker may hold the loop before the demotion: at most the one that showed it was long.

Never for ``@step(blocking=True)`` (a step that says it blocks), generator steps, batched steps
(a stage of their own: engine/batching.py), fan-out plans, or with
``ZSERVE_ADAPTIVE_STEPS=false``. Counts are plain attributes: threads of concurrent runs may
update them at once, and a lost update only delays a promotion.
"""

from __future__ import annotations

__all__ = ["LONG_S", "PROMOTE_AFTER", "SHORT_S", "Placement"]

#: A stage run shorter than this (its steps' own time) counts towards a promotion.
SHORT_S = 0.0002
#: Runs in a row under SHORT_S before the stage runs on the loop.
PROMOTE_AFTER = 32
#: A stage run on the loop that takes this long sends the stage back to threads, for good.
LONG_S = 0.001


class Placement:
    def __init__(self) -> None:
        self.on_loop = False
        self.demoted = False
        self.short_runs = 0

    def ran_in_thread(self, seconds: float) -> None:
        if self.demoted:
            return
        if seconds >= SHORT_S:
            self.short_runs = 0
            return
        self.short_runs += 1
        if self.short_runs >= PROMOTE_AFTER:
            self.on_loop = True

    def ran_on_loop(self, seconds: float) -> None:
        if seconds >= LONG_S:
            self.on_loop, self.demoted = False, True
