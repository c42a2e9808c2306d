"""``register_materializer``: how a value with no JSON form is stored when a run is recorded.

Values are stored as JSON where pydantic-core can encode them (dataclasses and pydantic models
included) and as bytes when they are bytes. For any other type, a user registers a function that
turns a value into bytes, with the content type of those bytes; the most specific registered
class of a value's type (its MRO) is used. A value nobody registered for is kept as its type and
``repr`` and marked not loadable. Nothing is ever pickled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zserve.errors import UsageError

__all__ = ["Materializer", "materializer_for", "register_materializer", "unregister_materializer"]


@dataclass(frozen=True)
class Materializer:
    type: type
    save: Callable[[Any], bytes]
    content_type: str


_REGISTRY: dict[type, Materializer] = {}


def register_materializer(
    type_: type, save: Callable[[Any], bytes], *, content_type: str = "application/octet-stream"
) -> None:
    """Store values of ``type_`` (and its subclasses) as ``save(value)``, bytes of
    ``content_type``, when a run is recorded. A later registration for the same type wins."""
    if not isinstance(type_, type):
        raise UsageError(f"register_materializer: {type_!r} is not a class: pass the value's type")
    if not callable(save):
        raise UsageError(f"register_materializer: {save!r} is not callable: pass value -> bytes")
    _REGISTRY[type_] = Materializer(type_, save, content_type)


def unregister_materializer(type_: type) -> None:
    _REGISTRY.pop(type_, None)


def materializer_for(value: Any) -> Materializer | None:
    """The materializer registered for ``value``'s type or its nearest base class, if any."""
    if not _REGISTRY:
        return None
    for cls in type(value).__mro__:
        found = _REGISTRY.get(cls)
        if found is not None:
            return found
    return None
