"""The resources a compiled plan's steps ask for (``zserve.sdk.resources``): one ``ResourceSlot``
per resource, which the plan's argument getters read and ``zserve.engine.worker.Worker`` fills."""

from __future__ import annotations

from typing import Any

from zserve.errors import PipelineDefinitionError
from zserve.sdk.resources import ResourceSpec
from zserve.sdk.tracing import Node

__all__ = ["ResourceNotBuilt", "ResourceSlot", "resource_slots"]


class ResourceNotBuilt(RuntimeError):
    """A step asked for a resource no ``Worker`` has built (``zserve.engine.worker``)."""


class ResourceSlot:
    """Where a plan's steps read one resource's value: filled by ``Worker.start``. Reading
    ``value`` costs one attribute look-up; before it is filled, it raises naming the resource."""

    __slots__ = ("spec", "value")
    value: Any

    def __init__(self, spec: ResourceSpec) -> None:
        self.spec = spec

    def __getattr__(self, name: str) -> Any:  # only reached while ``value`` is unset
        raise ResourceNotBuilt(
            f"resource '{self.spec.name}' ({self.spec.label}) is not built: run the plan inside "
            "zserve.engine.worker.Worker (the server and `zserve run` do)"
        )


def resource_slots(nodes: list[Node]) -> dict[str, ResourceSlot]:
    """One slot per resource; one resource per factory, however many steps ask for it."""
    slots: dict[str, ResourceSlot] = {}
    for node in nodes:
        for ref in node.inputs.values():
            if ref.kind != "resource":
                continue
            spec: ResourceSpec = ref.value
            known = slots.get(ref.name)
            if known is None:
                same = [s for s in slots.values() if s.spec.factory is spec.factory]
                if same:
                    raise PipelineDefinitionError(
                        f"step '{node.step.name}': factory {spec.label} is declared as "
                        f"resource '{spec.name}' and as '{same[0].spec.name}'; use one name"
                    )
                slots[ref.name] = ResourceSlot(spec)
            elif known.spec.factory is not spec.factory:
                raise PipelineDefinitionError(
                    f"step '{node.step.name}': two resources are named '{spec.name}' "
                    f"({known.spec.label} and {spec.label}); give one another name "
                    "(Resource(factory, name=...))"
                )
    return slots
