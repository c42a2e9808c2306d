"""``Resource``: what a step needs that is built once per worker process (a model, a tokenizer, a
client pool), declared as a parameter default::

    def load_model() -> Model:
        return Model.load("weights.bin")

    @step
    def predict(x: float, model: Model = Resource(load_model)) -> float:
        return model(x)

The factory takes no argument. It returns the value (a plain or an ``async`` function), yields
it once (a generator, sync or async: the code after ``yield`` is the teardown, run when the
worker stops), or is decorated with ``@contextlib.contextmanager`` /
``@contextlib.asynccontextmanager`` (the context it returns is entered, and exited at the end).

One instance per factory per worker, however many steps ask for it. A resource parameter is
never a request field: the engine fills it (``zserve.engine.worker``), and passing it in the
pipeline body is a definition error. The SDK only declares; it builds nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Any, Literal, TypeVar, overload

from zserve.errors import PipelineDefinitionError

__all__ = ["Resource", "ResourceSpec", "factory_label", "resource_default"]

T = TypeVar("T")
FactoryKind = Literal[
    "sync", "async", "generator", "async-generator", "context-manager", "async-context-manager"
]


class ResourceSpec:
    """What ``Resource(factory)`` stands for: the factory, the resource's name and how the
    factory gives its value (``kind``)."""

    __slots__ = ("factory", "kind", "name")

    def __init__(self, factory: Callable[[], Any], name: str | None = None) -> None:
        if not callable(factory):
            raise PipelineDefinitionError(
                f"Resource() takes a factory function that builds the value, not {factory!r}"
            )
        self.factory = factory
        self.name: str = name or getattr(factory, "__name__", None) or type(factory).__name__
        self.kind: FactoryKind = _kind(factory)

    @property
    def label(self) -> str:
        """``module:qualname`` of the factory (what ``/status`` shows)."""
        return factory_label(self.factory)

    def __repr__(self) -> str:
        return f"Resource({self.label}, name={self.name!r})"


@overload
def Resource(
    factory: Callable[[], AbstractAsyncContextManager[T]], *, name: str | None = None
) -> T: ...
@overload
def Resource(factory: Callable[[], AbstractContextManager[T]], *, name: str | None = None) -> T: ...
@overload
def Resource(factory: Callable[[], AsyncIterator[T]], *, name: str | None = None) -> T: ...
@overload
def Resource(factory: Callable[[], Iterator[T]], *, name: str | None = None) -> T: ...
@overload
def Resource(factory: Callable[[], Awaitable[T]], *, name: str | None = None) -> T: ...
@overload
def Resource(factory: Callable[[], T], *, name: str | None = None) -> T: ...


def Resource(factory: Callable[[], Any], *, name: str | None = None) -> Any:
    """Declare a step parameter the engine fills with ``factory``'s value, built once per
    worker before it serves. ``name`` (default: the factory's name) is how ``/status``,
    ``/health`` and errors call it. Typed as the value, so ``model: Model = Resource(load)``
    checks."""
    return ResourceSpec(factory, name)


def resource_default(param: inspect.Parameter) -> ResourceSpec | None:
    """The resource a parameter declares (its default), or None."""
    default = param.default
    return default if isinstance(default, ResourceSpec) else None


def factory_label(factory: Callable[..., Any]) -> str:
    module = getattr(factory, "__module__", None) or "?"
    qualname = getattr(factory, "__qualname__", None) or type(factory).__qualname__
    return f"{module}:{qualname}"


def _kind(factory: Callable[..., Any]) -> FactoryKind:
    if inspect.isasyncgenfunction(factory):
        return "async-generator"
    if inspect.isgeneratorfunction(factory):
        return "generator"
    if inspect.iscoroutinefunction(factory):
        return "async"
    # what @contextmanager / @asynccontextmanager return: one helper function's code for all
    code = getattr(factory, "__code__", None)
    if code is _CM_CODE:
        return "context-manager"
    if code is _ASYNC_CM_CODE:
        return "async-context-manager"
    return "sync"


def _gen() -> Iterator[None]:
    yield


async def _agen() -> AsyncIterator[None]:
    yield


_CM_CODE = contextmanager(_gen).__code__
_ASYNC_CM_CODE = asynccontextmanager(_agen).__code__
