"""Persistence: SQLAlchemy models and Alembic migrations for deployments and recorded runs (with
their artifact files).
May import the bottom modules (errors, records, settings), SQLAlchemy and Alembic; nothing else of
zserve (docs/architecture.md, Layers)."""

from zserve.store.store import Store

__all__ = ["Store"]
