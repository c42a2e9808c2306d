"""What the benchmark scripts share: their error, and their progress lines on stderr."""

from __future__ import annotations

import sys

__all__ = ["BenchError", "log"]


class BenchError(Exception):
    """The benchmark cannot give a meaningful answer; the message says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
