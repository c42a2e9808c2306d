"""Alembic environment for the zserve store.

Configured in code by ``zserve.store.schema.alembic_config`` (no alembic.ini). The caller may hand
over an open connection in ``config.attributes["connection"]``; otherwise one is made from the
``sqlalchemy.url`` option. Logging is left alone: the application owns it (no ``fileConfig``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from zserve.store.models import Base

config = context.config
target_metadata = Base.metadata


def _is_sqlite(url_or_dialect: str) -> bool:
    return url_or_dialect.startswith("sqlite")


def run_migrations_offline() -> None:
    """Emit the migration SQL as text (``alembic upgrade --sql``); no database needed."""
    url = config.get_main_option("sqlalchemy.url") or "sqlite://"
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=_is_sqlite(url),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=_is_sqlite(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("zserve store migrations need a connection or sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            _run_with(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
