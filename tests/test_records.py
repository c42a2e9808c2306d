"""The shared vocabulary in zserve.records: one definition of job and step states, and records
that survive the JSON round trip a broker or a worker's environment puts them through."""

from __future__ import annotations

import json

from zserve import events as ev
from zserve.records import (
    CAPTURE_MODES,
    FINISHED,
    DeploymentRecord,
    JobRecord,
    JobStatus,
    StepStatus,
)


def test_job_states_and_terminal_events_agree() -> None:
    assert [s.value for s in JobStatus] == ["queued", "running", "completed", "failed", "cancelled"]
    assert {s for s in JobStatus if s.finished} == FINISHED
    assert set(ev.TERMINAL.values()) == FINISHED
    assert {ev.TERMINAL[kind] for kind in ev.TERMINAL_EVENT.values()} == FINISHED
    assert CAPTURE_MODES == ("none", "metadata", "full", "sampled", "errors_only")


def test_job_record_round_trips_through_json_with_typed_status() -> None:
    record = JobRecord(
        job_id="j1",
        created_at=1.5,
        status=JobStatus.FAILED,
        steps=[{"name": "a", "status": StepStatus.FAILED, "duration_ms": 2.0}],
        error={"reason": "step_failed", "step": "a", "message": "boom"},
    )
    back = JobRecord.from_row(json.loads(json.dumps(record.to_row())))
    assert back == record
    assert back.status is JobStatus.FAILED and back.finished
    doc = json.loads(json.dumps(back.to_dict()))
    assert doc["status"] == "failed" and doc["steps"][0]["status"] == "failed"
    assert doc["created_at"] == "1970-01-01T00:00:01.500000+00:00"
    assert "outputs" not in doc and doc["error"]["step"] == "a"


def test_deployment_record_round_trips_through_json() -> None:
    record = DeploymentRecord(
        id="d1", name="weather", version=2, source="m:p", import_root="/x",
        pipeline_name="weather", code_hash="h", file_hashes={"/x/m.py": "h"},
    )  # fmt: skip
    assert DeploymentRecord.from_json(record.to_json()) == record
    assert record.ref == "weather:2"


def test_ids_do_not_repeat_when_a_pipeline_reseeds_random() -> None:
    import random
    import uuid

    from zserve.records import new_id, new_job_id

    seen = set()
    for _ in range(3):
        random.seed(1234)  # a step may do this: our ids must not follow
        seen |= {new_id(), new_job_id()}
    assert len(seen) == 6
    assert uuid.UUID(new_id()).version == 7 and uuid.UUID(new_job_id()).version == 4
