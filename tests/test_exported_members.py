"""The public API, pinned: a change here is a change users see."""

from __future__ import annotations

import zserve
import zserve.errors


def test_top_level_exports() -> None:
    assert zserve.__all__ == [
        "Capture",
        "Pipeline",
        "Resource",
        "RunContext",
        "Step",
        "__version__",
        "errors",
        "get_context",
        "pipeline",
        "register_materializer",
        "step",
    ]
    for name in zserve.__all__:
        assert getattr(zserve, name) is not None


def test_error_exports_are_one_tree() -> None:
    for name in zserve.errors.__all__:
        if name in ("EXIT_CODES", "PROBLEM_BASE", "describe_fields"):
            continue
        cls = getattr(zserve.errors, name)
        assert issubclass(cls, zserve.errors.ZServeError)
        assert cls.exit_code in zserve.errors.EXIT_CODES
        assert 400 <= cls.http_status < 600


def test_unknown_attribute() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = zserve.nope  # type: ignore[attr-defined]
