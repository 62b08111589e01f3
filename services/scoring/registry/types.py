"""The registry's plain types: stages, version and audit records, routing, and the errors.

No database here: the gateway reads routing through the `RoutingSource` protocol with these
types, and the store (scoring.registry.store) is the one implementation it is handed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class Stage(StrEnum):
    """Lifecycle stage of a model version."""

    REGISTERED = "registered"
    SHADOW = "shadow"
    CANARY = "canary"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class RegistryError(Exception):
    """A registry operation was refused; the message names the target and version."""


class VersionNotFound(RegistryError):
    """The (target, version) is not registered."""


class VersionConflict(RegistryError):
    """The (target, version) is registered already, with another checksum."""


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A registered model version (plain values, detached from the database)."""

    target: str
    version: int
    stage: Stage
    artifact_path: str
    checksum: str
    feature_service: str
    schema_hash: str
    train_start: str | None
    train_end: str | None
    metrics: dict[str, float]
    traffic_percent: float | None
    experiment_salt: str | None
    created_at: datetime
    created_by: str
    stage_changed_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One stage change; `from_stage` is None for the registration."""

    id: int
    target: str
    version: int
    from_stage: Stage | None
    to_stage: Stage
    traffic_percent: float | None
    actor: str
    reason: str
    forced: bool
    at: datetime
    details: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TargetRouting:
    """The versions a target serves: production answers, canary takes a share, shadow mirrors."""

    target: str
    production: VersionRecord | None
    canary: VersionRecord | None
    shadow: VersionRecord | None


@dataclass(frozen=True, slots=True)
class Routing:
    """Every registered target's routing at one revision (the last stage event id, 0 if none)."""

    revision: int
    targets: dict[str, TargetRouting]


@dataclass(frozen=True, slots=True)
class Instance:
    """A serving instance and the routing revision it reported with its last heartbeat."""

    instance_id: str
    revision: int
    detail: dict[str, Any] | None
    heartbeat_at: datetime


class RoutingSource(Protocol):
    """What a gateway needs from the registry: the routing to apply, and to say what it applied."""

    def revision(self) -> int:
        """The routing revision (the last stage event id): a cheap check whether it changed."""
        ...

    def routing(self) -> Routing:
        """Every target's production, canary and shadow version, with the revision."""
        ...

    def heartbeat(self, instance_id: str, revision: int, detail: dict[str, Any] | None) -> None:
        """Records that `instance_id` is alive and has applied routing `revision`."""
        ...

    def forget_instance(self, instance_id: str) -> None:
        """Removes an instance (a gateway shutting down cleanly)."""
        ...
