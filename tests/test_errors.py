"""Errors carry what they say and are rebuilt from a server's problem document by a
constructor, so a client raises the same class, with the same fields, that the server raised."""

from __future__ import annotations

import pytest

from zserve import errors


def round_trip(err: errors.ZServeError, status: int) -> errors.ZServeError:
    doc = err.to_problem(job_id="j1")
    return type(err).from_problem(doc, status_code=status)


def test_step_failed_keeps_its_step_and_message() -> None:
    err = errors.StepFailed("fetch", ValueError("no city"))
    assert (err.step, err.exc_type, err.exc_message) == ("fetch", "ValueError", "no city")
    back = round_trip(err, 500)
    assert isinstance(back, errors.StepFailed)
    assert back.step == "fetch" and str(back) == "Step 'fetch' raised ValueError: no city"
    assert back.status_code == 500 and back.problem_doc is not None
    assert back.problem_doc["job_id"] == "j1"


def test_invalid_parameters_keep_every_field() -> None:
    err = errors.InvalidParameters.from_field_errors(
        [{"loc": ("city",), "msg": "Field required"}, {"loc": ("days",), "msg": "bad int"}],
        prefix=["parameters"],
    )
    assert (
        str(err) == "Invalid parameters: parameters.city: Field required; parameters.days: bad int"
    )
    back = round_trip(err, 422)
    assert isinstance(back, errors.InvalidParameters) and back.errors == err.errors


def test_overloaded_says_when_to_retry() -> None:
    assert errors.Overloaded("busy", retry_after=3).retry_after == 3
    back = round_trip(errors.Overloaded("busy"), 429)
    assert isinstance(back, errors.Overloaded) and back.retry_after == 1


@pytest.mark.parametrize("cls", [errors.NotFound, errors.UsageError, errors.ExecutionTimeout])
def test_plain_errors_rebuild_with_the_servers_detail(cls: type[errors.ZServeError]) -> None:
    back = cls.from_problem({"detail": "what the server said"}, status_code=cls.http_status)
    assert type(back) is cls and str(back) == "what the server said"
    assert errors.ZServeError("here").problem_doc is None


def test_an_unknown_job_says_it_never_existed_or_was_forgotten_after_the_retention() -> None:
    err = errors.JobNotFound.unknown("abcd", 5400)
    assert str(err) == (
        "No job 'abcd' on this server: it never existed, or it finished more than 1h30m ago "
        "and was forgotten (ZSERVE_JOB_TTL_S)"
    )
    assert "finished and was forgotten" in str(errors.JobNotFound.unknown("abcd", None))
    assert "more than 45s ago" in str(errors.JobNotFound.unknown("abcd", 45))
    back = round_trip(err, 404)
    assert isinstance(back, errors.JobNotFound) and str(back) == str(err)
