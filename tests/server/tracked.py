"""Pipelines for the tracked-mode tests: a step that handles personal data, a secret input,
secret keys in outputs, metadata, bytes, large outputs and a step that fails on demand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from zserve import Capture, get_context, pipeline, step


@dataclass
class Forecast:
    city: str
    temp_c: float


@step(settings={"capture": "none"})
def lookup_user(email: str) -> dict[str, str]:
    return {"user": email.split("@")[0], "email": email}


@step
def forecast(city: str, api_key: Annotated[str, Capture("none")]) -> Forecast:
    get_context().log_metadata({"model": "v2", "auth_token": "t-123"})
    return Forecast(city, 21.5)


@step
def report(user: dict[str, str], fc: Forecast, size: int, fail: bool) -> dict[str, object]:
    if fail:
        raise ValueError(f"cannot report on {fc.city}")
    return {
        "text": f"{user['user']}: {fc.temp_c} in {fc.city}",
        "padding": "x" * size,
        "credentials": {"password": "hunter2", "max_tokens": 5},
    }


@pipeline
def tracked(
    city: str = "Paris",
    email: str = "ada@example.com",
    api_key: str = "sk-secret",
    size: int = 0,
    fail: bool = False,
) -> dict[str, object]:
    return report(lookup_user(email), forecast(city, api_key), size, fail)


@step(settings={"outputs": {"mode": "full", "artifacts": "errors_only"}})
def stage(n: int) -> int:
    return n * 2


@step
def explode(m: int, fail: bool) -> bytes:
    if fail:
        raise RuntimeError("boom")
    return bytes(range(m % 256))


@pipeline(settings={"capture": "metadata"})
def debug_on_error(n: int = 3, fail: bool = False) -> bytes:
    return explode(stage(n), fail)


class Matrix:
    """A type with no JSON form: stored through a materializer when one is registered."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def to_csv(self) -> bytes:
        return "\n".join(",".join(str(r * c) for c in range(3)) for r in range(self.rows)).encode()


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque thing>"


@step
def make_matrix(rows: int) -> Matrix:
    return Matrix(rows)


@step
def make_opaque(rows: int) -> Opaque:
    return Opaque()


@step
def combine(m: Matrix, o: Opaque) -> int:
    return m.rows


@pipeline
def objects(rows: int = 2) -> int:
    return combine(make_matrix(rows), make_opaque(rows))


def register() -> None:
    """Imported by the server (ZSERVE_DEPLOYMENT of objects_with_csv): the user's registration."""
    from zserve import register_materializer

    register_materializer(Matrix, Matrix.to_csv, content_type="text/csv")


register()
