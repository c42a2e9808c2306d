"""Fixtures for the store tests: real SQLite files under ``tmp_path``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The helpers module must be importable by name in spawned child processes, which inherit
# sys.path; pytest's default import mode already puts this directory there, other modes may not.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from zserve.store import Store  # noqa: E402


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/home/zserve.db"


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with Store(store_url) as opened:
        yield opened
