"""Persistence: SQLAlchemy models and Alembic migrations for deployments.
May import zserve.engine types, errors, settings, SQLAlchemy and Alembic; never server or cli."""

from zserve.store.store import Store

__all__ = ["Store"]
