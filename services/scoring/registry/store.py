"""The model registry store: versions, stage changes with their audit trail, routing, heartbeats.

One SQL database (SQLite file locally, PostgreSQL in production) shared by the CLI and every
gateway. Stage changes are serialised per database (SQLite `BEGIN IMMEDIATE`, PostgreSQL an
advisory transaction lock plus `SELECT ... FOR UPDATE` on the target's rows), so stage event ids
are handed out in commit order and the largest one is the routing revision.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from scoring.core.closeable import Closeable
from scoring.core.json_safe import json_safe
from scoring.registry.models import ModelVersion, ServingInstance, StageEvent
from scoring.registry.types import (
    AuditEvent,
    Instance,
    RegistryError,
    Routing,
    Stage,
    TargetRouting,
    VersionConflict,
    VersionNotFound,
    VersionRecord,
)

MIGRATIONS = Path(__file__).with_name("migrations")
STAGE_LOCK = 0x5C0_2E62  # pg_advisory_xact_lock key of registry writes that append events
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MIGRATING = threading.Lock()
_Record = TypeVar("_Record", VersionRecord, AuditEvent, Instance)


# A target has at most one version in each of these; the holder is demoted to the value.
_DEMOTED_TO = {
    Stage.PRODUCTION: Stage.ARCHIVED,
    Stage.CANARY: Stage.REGISTERED,
    Stage.SHADOW: Stage.REGISTERED,
}


def _now() -> datetime:
    return datetime.now(UTC)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module's own BEGIN handling is off; `_sqlite_on_begin` emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL (readers never block the writer) is a property of the file: set once. Switching
        # needs the file to itself and does not wait on the busy timeout, so processes opening
        # a new registry together retry.
        deadline = time.monotonic() + 5.0
        while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Writers take the write lock up front (IMMEDIATE): a deferred transaction that read first
    # could fail with SQLITE_BUSY instead of waiting when it tries to write.
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str) -> Engine:
    """An engine for the registry database.

    SQLite: the file's folder is created, WAL journal, 5 s busy timeout, foreign keys on and
    SQLAlchemy-emitted BEGIN (consistent reads, `BEGIN IMMEDIATE` for writes). A plain
    `postgresql://` URL gets the psycopg 3 driver.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def _alembic_config(url: str, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser escaping
    config.attributes["connection"] = connection
    return config


def _migrate(engine: Engine, url: str, revision: str, *, down: bool = False) -> None:
    # One transaction: on PostgreSQL env.py takes an advisory lock in it, so two processes
    # migrating at once run one after the other; on SQLite IMMEDIATE does the same. Within a
    # process a lock is needed too: alembic's `context` is one module-level proxy.
    with (
        _MIGRATING,
        engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection,
    ):
        config = _alembic_config(url, connection)
        if down:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrates the registry database at `url` up to `revision` (idempotent)."""
    engine = make_engine(url)
    try:
        _migrate(engine, url, revision)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str = "base") -> None:
    """Migrates the registry database at `url` down to `revision` (`base`: drops everything)."""
    engine = make_engine(url)
    try:
        _migrate(engine, url, revision, down=True)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The Alembic revision the database at `url` is at; None when it was never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _plain(kind: type[_Record], row: object, **converted: Any) -> _Record:
    """A plain record of `kind` from the row's columns of the same names, detached from the
    session; `converted` gives the fields whose column needs a conversion."""
    columns = {f.name: getattr(row, f.name) for f in fields(kind) if f.name not in converted}
    return kind(**columns, **converted)


def _version_record(row: ModelVersion) -> VersionRecord:
    metrics = {k: float(v) for k, v in row.metrics.items()}
    return _plain(VersionRecord, row, stage=Stage(row.stage), metrics=metrics)


def _audit_event(row: StageEvent) -> AuditEvent:
    from_stage = None if row.from_stage is None else Stage(row.from_stage)
    return _plain(AuditEvent, row, from_stage=from_stage, to_stage=Stage(row.to_stage))


def _name(target: str, version: int) -> str:
    return f"{target} v{version}"


class Registry(Closeable):
    """The model registry on one database URL (SQLite file or PostgreSQL).

    Args:
        url: SQLAlchemy URL, e.g. `sqlite:///.run/registry.db` or
            `postgresql+psycopg://user@host/db`.
        migrate: migrate the schema to head first (idempotent, safe from several processes).
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self._url = url
        self._engine = make_engine(url)
        self._sqlite = self._engine.dialect.name == "sqlite"
        # Writers: SQLite takes the write lock at BEGIN.
        self._write_engine = self._engine.execution_options(sqlite_begin="IMMEDIATE")
        # Readers of several tables (routing) see one snapshot; SQLite transactions already do.
        self._snapshot_engine = (
            self._engine
            if self._sqlite
            else self._engine.execution_options(isolation_level="REPEATABLE READ")
        )
        if migrate:
            _migrate(self._engine, url, "head")

    @property
    def url(self) -> str:
        return self._url

    def close(self) -> None:
        """Closes every pooled connection."""
        self._engine.dispose()

    @contextmanager
    def _writing(self, *, appends_events: bool = True) -> Iterator[Session]:
        """A write transaction, committed on success. Event writers are serialised so event ids
        are handed out in commit order (a gateway at revision N has seen every change <= N)."""
        with Session(self._write_engine) as session, session.begin():
            if appends_events and not self._sqlite:
                session.execute(select(func.pg_advisory_xact_lock(STAGE_LOCK)))
            yield session

    @contextmanager
    def _reading(self, *, snapshot: bool = False) -> Iterator[Session]:
        with Session(self._snapshot_engine if snapshot else self._engine) as session:
            yield session

    def register(
        self,
        target: str,
        version: int,
        *,
        artifact_path: str,
        checksum: str,
        feature_service: str,
        schema_hash: str,
        train_start: str | None,
        train_end: str | None,
        metrics: Mapping[str, float],
        manifest: Mapping[str, Any],
        actor: str,
    ) -> VersionRecord:
        """Registers a trained version in stage `registered`, with its audit event.

        Idempotent: the same (target, version, checksum) again returns the existing record and
        writes nothing.

        Returns:
            The registered version.

        Raises:
            VersionConflict: the version is registered already with another checksum.
            RegistryError: an argument is invalid (empty target, version < 1, bad checksum).
        """
        if not target:
            raise RegistryError("target: must not be empty")
        if version < 1:
            raise RegistryError(f"{_name(target, version)}: version must be >= 1")
        if not _SHA256.fullmatch(checksum):
            raise RegistryError(
                f"{_name(target, version)}: checksum must be 64 lowercase hex digits (sha256),"
                f" got {checksum!r}"
            )
        with self._writing() as session:
            existing = session.scalar(
                select(ModelVersion)
                .where(ModelVersion.target == target, ModelVersion.version == version)
                .with_for_update()
            )
            if existing is not None:
                if existing.checksum != checksum:
                    raise VersionConflict(
                        f"{_name(target, version)} is registered already with checksum"
                        f" {existing.checksum}, not {checksum}: give the new model a new version"
                    )
                return _version_record(existing)
            now = _now()
            row = ModelVersion(
                target=target,
                version=version,
                artifact_path=artifact_path,
                checksum=checksum,
                feature_service=feature_service,
                schema_hash=schema_hash,
                train_start=train_start,
                train_end=train_end,
                # JSON has no NaN (PostgreSQL refuses it): unmeasured metrics are left out, and
                # NaN / infinity in the manifest are stored as null.
                metrics={k: float(v) for k, v in metrics.items() if math.isfinite(float(v))},
                manifest=json_safe(dict(manifest)),
                created_at=now,
                created_by=actor,
            )
            session.add(row)
            # The registration is the version's first stage change, from no stage.
            _move(session, row, _Change(Stage.REGISTERED, actor, "", False, now, None))
            return _version_record(row)

    def get(self, target: str, version: int) -> VersionRecord:
        """One version.

        Raises:
            VersionNotFound: it is not registered.
        """
        with self._reading() as session:
            row = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.target == target, ModelVersion.version == version
                )
            )
            if row is None:
                raise VersionNotFound(f"{_name(target, version)} is not registered")
            return _version_record(row)

    def manifest(self, target: str, version: int) -> dict[str, Any]:
        """The training manifest a version was registered with.

        Raises:
            VersionNotFound: it is not registered.
        """
        with self._reading() as session:
            manifest = session.scalar(
                select(ModelVersion.manifest).where(
                    ModelVersion.target == target, ModelVersion.version == version
                )
            )
            if manifest is None:
                raise VersionNotFound(f"{_name(target, version)} is not registered")
            return dict(manifest)

    def versions(self, target: str | None = None) -> list[VersionRecord]:
        """Registered versions (of one target, or all), ordered by target and version."""
        query = select(ModelVersion).order_by(ModelVersion.target, ModelVersion.version)
        if target is not None:
            query = query.where(ModelVersion.target == target)
        with self._reading() as session:
            return [_version_record(row) for row in session.scalars(query)]

    def set_stage(
        self,
        target: str,
        version: int,
        stage: Stage,
        *,
        actor: str,
        reason: str = "",
        forced: bool = False,
        traffic_percent: float | None = None,
        salt: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> list[AuditEvent]:
        """Moves a version to `stage` in one transaction, demoting the version that held it.

        A target has at most one production, one canary and one shadow version: the holder is
        demoted first (production to archived, canary and shadow to registered), with its own
        audit event by the same actor and reason. Setting the stage a version has already (a
        canary's new percent) is allowed and audited.

        Args:
            stage: the new stage.
            actor: who changes it (audited).
            reason: why (audited).
            forced: the caller skipped its own checks (audited).
            traffic_percent: canary only: the share of traffic, 0 < p <= 100.
            salt: canary only: the traffic split's hash salt. Default: the canary's current
                salt when it is canary already, else `"{target}:v{version}"`.
            details: extra audit data of the change (JSON).

        Returns:
            The events written, in order (the demotion, if any, first).

        Raises:
            VersionNotFound: the version is not registered.
            RegistryError: the percent is missing or out of range for a canary, or given for
                another stage.
        """
        stage = Stage(stage)
        name = _name(target, version)
        if stage is Stage.CANARY:
            if traffic_percent is None or not 0 < traffic_percent <= 100:
                raise RegistryError(
                    f"{name}: canary traffic_percent must be in (0, 100], got {traffic_percent}"
                )
            traffic_percent = float(traffic_percent)
        elif traffic_percent is not None or salt is not None:
            raise RegistryError(
                f"{name}: traffic_percent and salt apply to canary only, not {stage}"
            )
        with self._writing() as session:
            rows = session.scalars(
                select(ModelVersion)
                .where(ModelVersion.target == target)
                .order_by(ModelVersion.version)
                .with_for_update()
            ).all()
            row = next((r for r in rows if r.version == version), None)
            if row is None:
                raise VersionNotFound(f"{name} is not registered")
            now = _now()
            written: list[StageEvent] = []
            demote_to = _DEMOTED_TO.get(stage)
            for holder in rows:
                if demote_to is not None and holder is not row and holder.stage == stage:
                    change = _Change(
                        demote_to, actor, reason, forced, now, {"replaced_by": version}
                    )
                    written.append(_move(session, holder, change))
            if stage is Stage.CANARY:
                current = row.experiment_salt if row.stage == Stage.CANARY else None
                salt = salt or current or f"{target}:v{version}"
            change = _Change(stage, actor, reason, forced, now, details, traffic_percent, salt)
            written.append(_move(session, row, change))
            return [_audit_event(e) for e in written]

    def previous_production(self, target: str) -> VersionRecord | None:
        """What a rollback returns to: the version most recently moved to production before,
        other than the current production version. None when there is none."""
        with self._reading(snapshot=True) as session:
            current = session.scalar(
                select(ModelVersion.version).where(
                    ModelVersion.target == target, ModelVersion.stage == Stage.PRODUCTION.value
                )
            )
            query = (
                select(StageEvent.version)
                .where(StageEvent.target == target, StageEvent.to_stage == Stage.PRODUCTION.value)
                .order_by(StageEvent.id.desc())
                .limit(1)
            )
            if current is not None:
                query = query.where(StageEvent.version != current)
            previous = session.scalar(query)
            if previous is None:
                return None
            row = session.scalar(
                select(ModelVersion).where(
                    ModelVersion.target == target, ModelVersion.version == previous
                )
            )
            return None if row is None else _version_record(row)

    def routing(self) -> Routing:
        """Every registered target's production, canary and shadow version, with the revision.

        Three small indexed queries in one snapshot; a poller can compare `revision()` first and
        read this only when it moved.
        """
        live = [s.value for s in _DEMOTED_TO]
        with self._reading(snapshot=True) as session:
            revision = session.scalar(select(func.coalesce(func.max(StageEvent.id), 0))) or 0
            names = session.scalars(select(ModelVersion.target).distinct()).all()
            held: dict[tuple[str, str], VersionRecord] = {
                (row.target, row.stage): _version_record(row)
                for row in session.scalars(select(ModelVersion).where(ModelVersion.stage.in_(live)))
            }
        targets = {
            name: TargetRouting(
                target=name,
                production=held.get((name, Stage.PRODUCTION.value)),
                canary=held.get((name, Stage.CANARY.value)),
                shadow=held.get((name, Stage.SHADOW.value)),
            )
            for name in sorted(names)
        }
        return Routing(revision=revision, targets=targets)

    def revision(self) -> int:
        """The routing revision: the last stage event id, 0 before any."""
        with self._reading() as session:
            return session.scalar(select(func.coalesce(func.max(StageEvent.id), 0))) or 0

    def history(self, target: str | None = None, limit: int | None = None) -> list[AuditEvent]:
        """Stage events (of one target, or all), oldest first.

        Args:
            limit: only the most recent `limit` events (still oldest first).
        """
        query = select(StageEvent).order_by(StageEvent.id.desc())
        if target is not None:
            query = query.where(StageEvent.target == target)
        if limit is not None:
            query = query.limit(limit)
        with self._reading() as session:
            events = [_audit_event(row) for row in session.scalars(query)]
        return events[::-1]

    def heartbeat(
        self, instance_id: str, revision: int, detail: dict[str, Any] | None = None
    ) -> None:
        """Records that `instance_id` is alive and applies routing `revision` (upsert)."""
        values = {
            "instance_id": instance_id,
            "revision": revision,
            "detail": detail,
            "heartbeat_at": _now(),
        }
        insert = sqlite.insert if self._sqlite else postgresql.insert
        statement = insert(ServingInstance).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[ServingInstance.instance_id],
            set_={k: statement.excluded[k] for k in ("revision", "detail", "heartbeat_at")},
        )
        with self._writing(appends_events=False) as session:
            session.execute(statement)

    def instances(self, max_age_s: float | None = None) -> list[Instance]:
        """Serving instances whose last heartbeat is younger than `max_age_s` (None: every one
        that has not forgotten itself), by id."""
        query = select(ServingInstance).order_by(ServingInstance.instance_id)
        if max_age_s is not None:
            cutoff = _now() - timedelta(seconds=max_age_s)
            query = query.where(ServingInstance.heartbeat_at > cutoff)
        with self._reading() as session:
            return [_plain(Instance, row) for row in session.scalars(query)]

    def forget_instance(self, instance_id: str) -> None:
        """Removes an instance (a gateway shutting down cleanly)."""
        with self._writing(appends_events=False) as session:
            session.execute(
                delete(ServingInstance).where(ServingInstance.instance_id == instance_id)
            )


@dataclass(frozen=True, slots=True)
class _Change:
    to: Stage
    actor: str
    reason: str
    forced: bool
    at: datetime
    details: dict[str, Any] | None
    traffic_percent: float | None = None
    salt: str | None = None


def _move(session: Session, row: ModelVersion, change: _Change) -> StageEvent:
    """Moves one version (a new one: from no stage) and appends its event, flushed now so
    event ids follow the order."""
    canary = change.to is Stage.CANARY
    event = StageEvent(
        target=row.target,
        version=row.version,
        from_stage=row.stage,
        to_stage=change.to.value,
        traffic_percent=change.traffic_percent if canary else None,
        actor=change.actor,
        reason=change.reason,
        forced=change.forced,
        at=change.at,
        details=change.details,
    )
    row.stage = change.to.value
    row.traffic_percent = change.traffic_percent if canary else None
    row.experiment_salt = change.salt if canary else None
    row.stage_changed_at = change.at
    session.add(event)
    # The holder's demotion must reach the database before the promotion (unique live stage).
    session.flush()
    return event
