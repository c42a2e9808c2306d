"""The deployment record: what the store keeps and what a parent hands its workers."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DeploymentRecord"]


@dataclass(frozen=True)
class DeploymentRecord:
    """One stored deployment (a version of a named pipeline). Plain data: JSON round-trips."""

    id: str
    name: str
    version: int
    #: "package.module:attr" or "/absolute/path/file.py:attr"
    source: str
    #: Absolute directory put on sys.path before the source is imported.
    import_root: str
    pipeline_name: str
    #: sha256 over the sorted file hashes.
    code_hash: str
    #: Absolute path of every file that defines the pipeline or one of its steps -> sha256.
    file_hashes: dict[str, str] = field(default_factory=dict)
    #: The compiled pipeline's description: steps, parameters (both forms), outputs.
    spec: dict[str, Any] = field(default_factory=dict)
    #: The pipeline's own settings (``@pipeline(settings=...)``).
    settings: dict[str, Any] = field(default_factory=dict)
    capture_default: str = "none"
    #: ISO 8601, UTC.
    created_at: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentRecord:
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> DeploymentRecord:
        return cls.from_dict(json.loads(text))
