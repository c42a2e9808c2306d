"""Steps for tests/sdk/test_capture_policies.py, in a module WITHOUT ``from __future__ import
annotations``: here annotations are objects, not strings."""

from typing import Annotated

from zserve import Capture, pipeline, step


@step(settings={"inputs": {"note": "metadata"}})
def login(
    user: str, api_key: Annotated[str, Capture("none")], note: str = ""
) -> Annotated[dict[str, str], Capture("full", artifacts="errors_only")]:
    return {"user": user, "note": note}


@pipeline
def plain_login(user: str, api_key: str, note: str = "") -> dict[str, str]:
    return login(user, api_key, note)
