"""A pipeline with two parallel branches that take a while and a step that joins them: its run's
timeline shows the branches side by side and the join after the slower one."""

from __future__ import annotations

import time

from zserve import pipeline, step


@step
def fast_branch(x: int) -> int:
    time.sleep(0.1)
    return x + 1


@step
def slow_branch(x: int) -> int:
    time.sleep(0.2)
    return x * 2


@step
def join(a: int, b: int) -> int:
    time.sleep(0.05)
    return a + b


@pipeline
def branches(x: int = 1) -> int:
    return join(fast_branch(x), slow_branch(x))
