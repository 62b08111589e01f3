"""Registry migrations on SQLite and PostgreSQL: up, down, up again, append-only audit trail."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc, inspect

from scoring.registry import Registry, current_revision, downgrade, make_engine, upgrade
from scoring.registry.models import Base

from . import DIALECTS, database_url

TABLES = {"model_versions", "stage_events", "serving_instances"}
CHECKSUM = "ab" * 32


@pytest.fixture(params=DIALECTS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_and_upgrade_again(url: str) -> None:
    assert current_revision(url) is None
    upgrade(url)
    assert TABLES <= tables(url)
    assert current_revision(url) == "0001"
    upgrade(url)  # at head already: nothing to do
    assert current_revision(url) == "0001"

    downgrade(url)
    assert not TABLES & tables(url)
    assert current_revision(url) is None

    upgrade(url)
    assert TABLES <= tables(url)
    assert current_revision(url) == "0001"


def test_models_match_the_migrated_schema(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_stage_events_are_append_only(url: str) -> None:
    with Registry(url) as registry:
        registry.register(
            "item_ranker",
            1,
            artifact_path="model_repository/item_ranker/1/model.pt",
            checksum=CHECKSUM,
            feature_service="item_ranker_v1",
            schema_hash="s1",
            train_start=None,
            train_end=None,
            metrics={},
            manifest={},
            actor="alice",
        )
    engine = make_engine(url)
    try:
        for statement in (
            "UPDATE stage_events SET actor = 'mallory'",
            "DELETE FROM stage_events",
        ):
            with pytest.raises(exc.DBAPIError, match="stage_events is append-only"):
                with engine.begin() as connection:
                    connection.exec_driver_sql(statement)
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT actor FROM stage_events").all()
        assert [tuple(row) for row in rows] == [("alice",)]
    finally:
        engine.dispose()


def test_database_refuses_a_second_production_version(url: str) -> None:
    upgrade(url)
    engine = make_engine(url)
    insert = (
        "INSERT INTO model_versions (target, version, artifact_path, checksum, feature_service,"
        " schema_hash, metrics, manifest, stage, created_at, created_by, stage_changed_at)"
        " VALUES ('t', {v}, 'p', 'c', 'f', 's', '{{}}', '{{}}', '{stage}',"
        " '2025-01-01 00:00:00', 'a', '2025-01-01 00:00:00')"
    )
    try:
        with engine.begin() as connection:
            for version, stage in enumerate(("production", "archived", "archived"), start=1):
                connection.exec_driver_sql(insert.format(v=version, stage=stage))
        with pytest.raises(exc.IntegrityError):
            with engine.begin() as connection:
                connection.exec_driver_sql(insert.format(v=4, stage="production"))
    finally:
        engine.dispose()


# Each process imports first, says so, and migrates when told: all at the same instant.
MIGRATE_ON_GO = """
import sys
from scoring.registry import upgrade
print("ready", flush=True)
sys.stdin.readline()
upgrade(sys.argv[1])
"""


def test_processes_migrating_at_once_all_succeed(url: str) -> None:
    """CLI and gateways starting together all migrate; the others wait, then find head."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_ON_GO, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), outputs
    assert current_revision(url) == "0001"


def test_threads_creating_registries_at_once_all_succeed(url: str) -> None:
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def open_registry() -> None:
        barrier.wait(timeout=30)
        try:
            Registry(url).close()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=open_registry) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert current_revision(url) == "0001"
