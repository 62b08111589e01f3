"""Model registry: versions, stages with an append-only audit trail, routing and heartbeats."""

from scoring.registry.lazy import LazyRegistry
from scoring.registry.store import (
    Registry,
    current_revision,
    downgrade,
    make_engine,
    upgrade,
)
from scoring.registry.types import (
    AuditEvent,
    Instance,
    RegistryError,
    Routing,
    RoutingSource,
    Stage,
    TargetRouting,
    VersionConflict,
    VersionNotFound,
    VersionRecord,
)

__all__ = [
    "AuditEvent",
    "Instance",
    "LazyRegistry",
    "Registry",
    "RegistryError",
    "Routing",
    "RoutingSource",
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
