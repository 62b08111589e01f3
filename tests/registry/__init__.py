"""Registry tests. Each test gets its own database: a SQLite file, or a fresh PostgreSQL database
created on the local server and dropped after the test."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from ..conftest import require

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# The store tests run once per dialect; PostgreSQL ones carry the `postgres` marker.
DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped (WITH FORCE) on exit."""
    require(_postgres_reachable(), "PostgreSQL on 127.0.0.1:5432")
    name = f"registry_{uuid.uuid4().hex}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()


@contextmanager
def database_url(dialect: str, tmp_path: Path) -> Iterator[str]:
    """An empty registry database of `dialect`; SQLite's folder does not exist yet."""
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry' / 'registry.db'}"
    else:
        with postgres_database() as url:
            yield url
