"""Model registry: model versions, the append-only stage audit trail, serving instances.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

STAGES = "'registered', 'shadow', 'canary', 'production', 'archived'"
LIVE_STAGES = "'shadow', 'canary', 'production'"
APPEND_ONLY = "stage_events is append-only"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER stage_events_no_{action.lower()} BEFORE {action} ON stage_events
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"""
    for action in ("UPDATE", "DELETE")
]
POSTGRESQL_TRIGGERS = [
    f"""CREATE FUNCTION stage_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{APPEND_ONLY}';
    END;
    $$""",
    """CREATE TRIGGER stage_events_append_only BEFORE UPDATE OR DELETE ON stage_events
    FOR EACH ROW EXECUTE FUNCTION stage_events_append_only()""",
    """CREATE TRIGGER stage_events_no_truncate BEFORE TRUNCATE ON stage_events
    FOR EACH STATEMENT EXECUTE FUNCTION stage_events_append_only()""",
]
TRIGGERS = {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRESQL_TRIGGERS}


def upgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect not in TRIGGERS:
        raise NotImplementedError(f"registry: no append-only triggers for {dialect}")
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("feature_service", sa.String(128), nullable=False),
        sa.Column("schema_hash", sa.String(128), nullable=False),
        sa.Column("train_start", sa.String(64), nullable=True),
        sa.Column("train_end", sa.String(64), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("traffic_percent", sa.Float(), nullable=True),
        sa.Column("experiment_salt", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("stage_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("target", "version", name="uq_model_versions_target_version"),
        sa.CheckConstraint(f"stage IN ({STAGES})", name="ck_model_versions_stage"),
    )
    # At most one shadow, one canary and one production version per target.
    op.create_index(
        "uq_model_versions_live_stage",
        "model_versions",
        ["target", "stage"],
        unique=True,
        sqlite_where=sa.text(f"stage IN ({LIVE_STAGES})"),
        postgresql_where=sa.text(f"stage IN ({LIVE_STAGES})"),
    )
    op.create_table(
        "stage_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(16), nullable=True),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("traffic_percent", sa.Float(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False, server_default=""),
        sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.CheckConstraint(f"to_stage IN ({STAGES})", name="ck_stage_events_to_stage"),
        sqlite_autoincrement=True,  # ids (routing revisions) are never reused
    )
    op.create_index("ix_stage_events_target_id", "stage_events", ["target", "id"])
    op.create_table(
        "serving_instances",
        sa.Column("instance_id", sa.String(256), primary_key=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )
    for statement in TRIGGERS[dialect]:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_context().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS stage_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS stage_events_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS stage_events_no_truncate ON stage_events")
        op.execute("DROP TRIGGER IF EXISTS stage_events_append_only ON stage_events")
        op.execute("DROP FUNCTION IF EXISTS stage_events_append_only()")
    op.drop_table("serving_instances")
    op.drop_index("ix_stage_events_target_id", table_name="stage_events")
    op.drop_table("stage_events")
    op.drop_index("uq_model_versions_live_stage", table_name="model_versions")
    op.drop_table("model_versions")
