"""Waiting, in the in-process server tests, for a job to end."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["wait_finished"]


def wait_finished(client: Any, job_id: str, deadline_s: float = 30) -> dict[str, Any]:
    """Poll ``GET /jobs/{job_id}`` until the job has ended: its document."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        doc: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if doc["status"] in ("completed", "failed", "cancelled"):
            return doc
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish")
