"""Which capture mode applies: request precedence, the ceiling and the off-switch, reproducible
sampling, and per-step and per-value settings with ``none`` as a privacy floor."""

from __future__ import annotations

import pytest

from zserve.engine.capture import (
    CaptureLimits,
    cap,
    require_run_only,
    resolve_request,
    resolve_value,
    sampled_in,
)
from zserve.errors import CaptureNotSupported, UsageError

FULL = CaptureLimits()


@pytest.mark.parametrize(
    ("override", "pipeline", "default", "expected"),
    [
        ("full", "metadata", "sampled", "full"),
        (None, "metadata", "sampled", "metadata"),
        (None, None, "sampled", "sampled"),
        (None, None, None, "none"),
        ("none", "full", "full", "none"),
    ],
)
def test_request_precedence(
    override: str | None, pipeline: str | None, default: str | None, expected: str
) -> None:
    got = resolve_request(FULL, override=override, pipeline=pipeline, default=default)
    assert got.mode == got.requested == expected and not got.capped


def test_ceiling_caps_and_says_what_was_asked() -> None:
    limits = CaptureLimits(ceiling="metadata")
    got = resolve_request(limits, override="full")
    assert (got.mode, got.requested, got.capped) == ("metadata", "full", True)
    assert not got.keeps_values
    assert resolve_request(limits, override="sampled").mode == "sampled"
    # below a full ceiling, sampled and errors_only records keep no values
    assert not resolve_request(limits, override="sampled").keeps_values
    assert not resolve_request(
        CaptureLimits(ceiling="sampled"), override="errors_only"
    ).keeps_values
    assert resolve_request(FULL, override="errors_only").keeps_values


def test_off_switch_forces_none_whatever_is_asked() -> None:
    off = CaptureLimits(enabled=False)
    got = resolve_request(off, override="full", pipeline="full", default="full")
    assert (got.mode, got.requested) == ("none", "full")
    assert cap("metadata", off) == "none"


def test_unknown_modes_and_rates_are_refused() -> None:
    with pytest.raises(UsageError, match="Unknown capture mode 'everything'"):
        resolve_request(FULL, override="everything")
    with pytest.raises(UsageError, match=r"sample_rate 1\.5"):
        resolve_request(FULL, override="sampled", override_rate=1.5)
    with pytest.raises(UsageError, match="capture ceiling"):
        CaptureLimits(ceiling="most")  # type: ignore[arg-type]


def test_sampling_is_reproducible_and_close_to_the_rate() -> None:
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(4000)]
    first = [sampled_in(i, 0.1, "seed") for i in ids]
    assert first == [sampled_in(i, 0.1, "seed") for i in ids]  # same answer every time
    assert 0.08 < sum(first) / len(ids) < 0.12
    assert [sampled_in(i, 0.1, "other") for i in ids] != first  # the seed matters
    assert all(sampled_in(i, 1.0) for i in ids[:10])
    assert not any(sampled_in(i, 0.0) for i in ids[:10])
    # a higher rate keeps every request a lower one kept
    assert all(sampled_in(i, 0.5, "seed") for i, kept in zip(ids, first, strict=True) if kept)


def test_most_specific_setting_wins_and_none_is_a_floor() -> None:
    assert resolve_value("metadata") == "metadata"
    assert resolve_value("metadata", "full") == "full"  # a step asks for more
    assert resolve_value("full", "metadata") == "metadata"  # a step asks for less
    assert resolve_value("full", None, "metadata") == "metadata"  # a value's own policy
    assert resolve_value("full", "none", "full") == "none"  # a step's none: a floor
    assert resolve_value("full", "full", "none") == "none"  # a value's none
    assert resolve_value("metadata", "full", limits=CaptureLimits(ceiling="metadata")) == "metadata"
    assert resolve_value("full", "full", limits=CaptureLimits(enabled=False)) == "none"


def test_require_run_only_refuses_tracked_modes_saying_how_to_proceed() -> None:
    require_run_only(None, fix="x")
    require_run_only("none", fix="x")
    with pytest.raises(CaptureNotSupported, match="Capture mode 'full' is not supported yet: do y"):
        require_run_only("full", fix="do y")
