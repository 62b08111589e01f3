"""Alembic environment of the model registry, configured programmatically (no alembic.ini).

`scoring.registry.store.upgrade()` passes an open connection in `config.attributes["connection"]`
(already in a transaction); without one an engine is built from `sqlalchemy.url`. On PostgreSQL a
transaction-scoped advisory lock serialises processes that migrate at the same time: the second
one waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from scoring.registry.models import Base

MIGRATION_LOCK = 0x5C0_2E61  # pg_advisory_xact_lock key of registry migrations

config = context.config


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("registry migrations: no connection and no sqlalchemy.url configured")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
