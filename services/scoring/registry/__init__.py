"""Model registry: versions, stages with an append-only audit trail, routing and heartbeats."""

from scoring.registry.store import (
    AuditEvent,
    Instance,
    Registry,
    RegistryError,
    Routing,
    Stage,
    TargetRouting,
    VersionConflict,
    VersionNotFound,
    VersionRecord,
    current_revision,
    downgrade,
    make_engine,
    upgrade,
)

__all__ = [
    "AuditEvent",
    "Instance",
    "Registry",
    "RegistryError",
    "Routing",
    "Stage",
    "TargetRouting",
    "VersionConflict",
    "VersionNotFound",
    "VersionRecord",
    "current_revision",
    "downgrade",
    "make_engine",
    "upgrade",
]
