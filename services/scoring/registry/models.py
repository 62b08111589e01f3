"""Registry tables: model versions, the append-only stage audit trail and live serving instances.

The schema itself is created by the Alembic migrations in `migrations/`; these mappings must
match it (a test compares them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

STAGES = ("registered", "shadow", "canary", "production", "archived")
# Stages a target holds at most one version in (enforced by a partial unique index as well).
LIVE_STAGES = ("shadow", "canary", "production")

_STAGE_LIST = ", ".join(f"'{s}'" for s in STAGES)
_LIVE_LIST = ", ".join(f"'{s}'" for s in LIVE_STAGES)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out. SQLite keeps no offset, so values are stored as UTC and
    tagged UTC again when read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: registry times must be aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    """One trained model version of a target and the stage it is in."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("target", "version", name="uq_model_versions_target_version"),
        CheckConstraint(f"stage IN ({_STAGE_LIST})", name="ck_model_versions_stage"),
        Index(
            "uq_model_versions_live_stage",
            "target",
            "stage",
            unique=True,
            sqlite_where=text(f"stage IN ({_LIVE_LIST})"),
            postgresql_where=text(f"stage IN ({_LIVE_LIST})"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    artifact_path: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    feature_service: Mapped[str] = mapped_column(String(128))
    schema_hash: Mapped[str] = mapped_column(String(128))
    train_start: Mapped[str | None] = mapped_column(String(64))
    train_end: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    # Large and read rarely: never loaded with the row unless asked for.
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, deferred=True)
    stage: Mapped[str] = mapped_column(String(16))
    traffic_percent: Mapped[float | None] = mapped_column(Float)
    experiment_salt: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128))
    stage_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class StageEvent(Base):
    """One stage change. Append-only (database triggers); the id is the routing revision."""

    __tablename__ = "stage_events"
    __table_args__ = (
        CheckConstraint(f"to_stage IN ({_STAGE_LIST})", name="ck_stage_events_to_stage"),
        Index("ix_stage_events_target_id", "target", "id"),
        # AUTOINCREMENT: SQLite never reuses an id, so revisions only grow.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    traffic_percent: Mapped[float | None] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    forced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class ServingInstance(Base):
    """A live gateway and the routing revision it applies, refreshed by its heartbeat."""

    __tablename__ = "serving_instances"

    instance_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
