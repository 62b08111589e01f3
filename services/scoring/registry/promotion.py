"""Promotion, canary, shadow and rollback: gates, then a zero-downtime switch.

Every stage change that adds a version to serving runs the same steps:

1. gates: the version's artifact is the registered one (checksum); its feature schema hash is
   the live feature service's (never overridable: the gateway could not feed it); for production
   and canary its metrics trail production's by at most the tolerance, unless forced with a
   reason (audited);
2. Triton loads the new version beside the ones serving (explicit model control), waits until
   it is ready, and warms it up;
3. the registry records the stage change (the audit event is the new routing revision);
4. the promotion waits until every live gateway reports that revision applied (heartbeats),
   including one that was live when the promotion began and has gone silent since;
5. after a drain period for requests already sent to the old version, Triton unloads the
   versions that no longer serve.

If a gateway does not confirm in time, nothing is unloaded: a stale gateway keeps working.
A gateway that stopped cleanly (it forgets itself), or was silent for `heartbeat_max_age_s`
before the promotion began (presumed gone), is not waited for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from scoring.core.digest import file_sha256
from scoring.core.settings import Settings
from scoring.registry.store import Registry
from scoring.registry.types import AuditEvent, RegistryError, Stage, VersionRecord
from scoring.triton.control import TritonControl

LOWER_IS_BETTER = frozenset({"logloss"})
SERVING_STAGES = (Stage.PRODUCTION, Stage.CANARY, Stage.SHADOW)


class GateRefused(RegistryError):
    """A promotion gate said no; the message says which and how to proceed."""


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """One gated metric of a candidate against production."""

    metric: str
    candidate: float
    production: float
    passed: bool

    @property
    def delta(self) -> float:
        return self.candidate - self.production


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate's verdict on a version, before any change (the console shows them).

    Attributes:
        gate: "artifact", "schema" or "metric <name>".
        overridable: a failed metric gate may be forced with a reason (audited); the artifact
            and schema gates never.
    """

    gate: str
    passed: bool
    detail: str
    overridable: bool = False


def metric_checks(
    candidate: VersionRecord,
    production: VersionRecord | None,
    metrics: tuple[str, ...],
    tolerance: float,
) -> list[MetricCheck]:
    """Each gated metric: passed when the candidate is not worse than production by more than
    `tolerance` (higher is better, except logloss). No production version: nothing to check."""
    if production is None:
        return []
    checks = []
    for name in metrics:
        new = float(candidate.metrics.get(name, math.nan))
        old = float(production.metrics.get(name, math.nan))
        if math.isnan(old):
            continue  # production never measured it: nothing to compare against
        worse = (new - old) if name in LOWER_IS_BETTER else (old - new)
        checks.append(MetricCheck(name, new, old, not math.isnan(new) and worse <= tolerance))
    return checks


def serving_versions(registry: Registry, target: str) -> set[int]:
    """Versions of `target` in production, canary or shadow."""
    routing = registry.routing().targets.get(target)
    if routing is None:
        return set()
    return {r.version for r in (routing.production, routing.canary, routing.shadow) if r}


def sync(registry: Registry, control: TritonControl, target: str) -> set[int]:
    """Loads exactly the registry's serving versions of `target` into Triton and warms them up
    (after a Triton restart); returns them. A target with none is left as Triton has it."""
    versions = serving_versions(registry, target)
    if versions:
        control.load(target, versions)
        for v in sorted(versions):
            control.warm_up(target, v)
    return versions


def artifact(model_repository: Path, target: str, version: int) -> Path:
    """A version's TorchScript file in the model repository."""
    return Path(model_repository) / target / str(version) / "model.pt"


@dataclass
class Promoter:
    """Drives the registry and Triton together; see the module docstring for the steps.

    Attributes:
        live_schema: the live feature service's schema hash, by service name (from Feast).
        control: Triton's model control; None changes the registry only (no Triton to drive).
        actor: who makes the changes (audited): an authenticated caller's name, or a name
            marked as not authenticated (scoring.core.access.Actor).
        actor_auth: how `actor` was authenticated, added to each change's audit details under
            "auth" (None: nothing added).
        say: progress messages for a person (the CLI prints them).
        unconfirmed: the gateways that had not applied the last switch when the wait for them
            timed out (its old versions are kept loaded); empty when every one confirmed.
    """

    settings: Settings
    registry: Registry
    live_schema: Callable[[str], str]
    control: TritonControl | None = None
    actor: str = "unknown"
    say: Callable[[str], None] = field(default=lambda message: None)
    unconfirmed: list[str] = field(default_factory=list)
    actor_auth: dict[str, str] | None = None

    # --- gates ---------------------------------------------------------------------------

    def check_artifact(self, record: VersionRecord) -> None:
        model = artifact(self.settings.triton.model_repository, record.target, record.version)
        if not model.is_file():
            raise GateRefused(f"{record.target} v{record.version}: {model} is missing")
        if file_sha256(model) != record.checksum:
            raise GateRefused(
                f"{record.target} v{record.version}: {model} does not match the registered "
                "checksum (the artifact changed after registration); re-register or retrain"
            )

    def check_schema(self, record: VersionRecord) -> None:
        live = self.live_schema(record.feature_service)
        if live != record.schema_hash:
            raise GateRefused(
                f"{record.target} v{record.version} was trained on feature service "
                f"{record.feature_service} with schema {record.schema_hash}, but the live "
                f"feature service has schema {live}: the gateway could not feed it. Retrain on "
                "the live features (scoring train) or restore the feature definitions."
            )

    def check_metrics(self, record: VersionRecord, force: bool, reason: str) -> list[MetricCheck]:
        production = self.registry.routing().targets.get(record.target)
        current = production.production if production else None
        if current is not None and current.version == record.version:
            return []
        cfg = self.settings.registry
        checks = metric_checks(record, current, cfg.gate_metrics, cfg.gate_tolerance)
        failed = [c for c in checks if not c.passed]
        if failed and not force:
            assert current is not None
            worse = ", ".join(f"{c.metric} {c.candidate:.4f} vs {c.production:.4f}" for c in failed)
            raise GateRefused(
                f"{record.target} v{record.version} is worse than production v{current.version} "
                f"beyond the tolerance {cfg.gate_tolerance}: {worse}. Use --force with --reason "
                "to override (audited)."
            )
        return checks

    def verdict(self, record: VersionRecord, stage: Stage) -> list[GateResult]:
        """Every gate's verdict on making `record` `stage`, changing nothing: the same checks
        the change runs (the artifact's only where Triton is driven; metrics for production
        and canary)."""
        checks: list[tuple[str, Callable[[VersionRecord], None]]] = []
        if self.control is not None:
            checks.append(("artifact", self.check_artifact))
        checks.append(("schema", self.check_schema))
        results = []
        for gate, check in checks:
            try:
                check(record)
            except GateRefused as exc:
                results.append(GateResult(gate, False, str(exc)))
            else:
                what = (
                    f"{record.feature_service} schema {record.schema_hash[:12]} is live"
                    if gate == "schema"
                    else "the file matches the registered checksum"
                )
                results.append(GateResult(gate, True, what))
        if stage not in (Stage.PRODUCTION, Stage.CANARY):
            return results
        routing = self.registry.routing().targets.get(record.target)
        current = routing.production if routing else None
        if current is None or current.version == record.version:
            return results
        cfg = self.settings.registry
        for c in metric_checks(record, current, cfg.gate_metrics, cfg.gate_tolerance):
            detail = (
                f"{c.candidate:.4f} vs production v{current.version} {c.production:.4f} "
                f"({c.delta:+.4f}; tolerance {cfg.gate_tolerance:g}, "
                f"{'lower' if c.metric in LOWER_IS_BETTER else 'higher'} is better)"
            )
            results.append(GateResult(f"metric {c.metric}", c.passed, detail, True))
        return results

    def _gates(
        self, record: VersionRecord, stage: Stage, force: bool, reason: str
    ) -> dict[str, object]:
        if force and not reason.strip():
            raise GateRefused("--force needs a --reason: overrides are audited")
        if self.control is not None:
            self.check_artifact(record)
        self.check_schema(record)
        checks = (
            self.check_metrics(record, force, reason)
            if stage in (Stage.PRODUCTION, Stage.CANARY)
            else []
        )
        failed = [c.metric for c in checks if not c.passed]
        if failed:
            self.say(f"metric gate overridden (--force): {', '.join(failed)}")
        return {
            "gates": {c.metric: [c.candidate, c.production, c.passed] for c in checks},
            "overridden": failed,
        }

    # --- the switch ----------------------------------------------------------------------

    def _switch(
        self,
        record: VersionRecord,
        stage: Stage,
        *,
        reason: str,
        forced: bool = False,
        percent: float | None = None,
        salt: str | None = None,
        details: dict[str, object] | None = None,
    ) -> list[AuditEvent]:
        target = record.target
        before = serving_versions(self.registry, target)
        adds = stage in SERVING_STAGES and record.version not in before
        expected = self.live_gateways()  # live when the switch began: they must confirm it
        if self.control is not None and adds:
            self.say(f"triton: loading {target} v{record.version} beside {sorted(before)}")
            self.control.load(target, before | {record.version})
            self.say(f"triton: warming up {target} v{record.version}")
            self.control.warm_up(target, record.version)
        if self.actor_auth is not None:
            details = {**(details or {}), "auth": self.actor_auth}
        events = self.registry.set_stage(
            target,
            record.version,
            stage,
            actor=self.actor,
            reason=reason,
            forced=forced,
            traffic_percent=percent,
            salt=salt,
            details=details,
        )
        for event in events:
            self.say(
                f"registry: {event.target} v{event.version} {event.from_stage} -> "
                f"{event.to_stage} (revision {event.id})"
            )
        after = serving_versions(self.registry, target)
        if self.control is None:
            return events
        if not self.wait_for_gateways(events[-1].id, expected):
            self.say(
                "not unloading old versions: a gateway has not applied the new routing "
                "(`scoring models sync` unloads them once it has)"
            )
            return events
        if before - after:
            time.sleep(self.settings.registry.drain_s)
            if after:
                self.control.load(target, after)
            else:
                self.control.unload(target)
            self.say(f"triton: unloaded {target} {sorted(before - after)}; serving {sorted(after)}")
        elif adds:
            self.say(f"triton: serving {target} {sorted(after)}")
        return events

    def live_gateways(self) -> set[str]:
        """The gateways whose last heartbeat is younger than `heartbeat_max_age_s`."""
        max_age = self.settings.registry.heartbeat_max_age_s
        return {i.instance_id for i in self.registry.instances(max_age)}

    def wait_for_gateways(self, revision: int, expected: Collection[str] | None = None) -> bool:
        """True once every gateway that must confirm reports `revision` (or a later one) applied.

        Those are the live gateways and the `expected` ones (live when the switch began; by
        default, live now) that have not stopped cleanly. An expected gateway whose heartbeat
        goes stale during the wait (frozen, cut off from the registry) still counts: it may
        still route to the old versions, so silence is no confirmation; the wait times out and
        nothing is unloaded. One already silent for `heartbeat_max_age_s` when the switch began
        is presumed gone, and one that stopped cleanly has forgotten itself: neither blocks.
        """
        cfg = self.settings.registry
        must = set(self.live_gateways() if expected is None else expected)
        deadline = time.monotonic() + cfg.ack_timeout_s
        self.unconfirmed = []
        while True:
            live = self.live_gateways()
            counted = [i for i in self.registry.instances() if i.instance_id in must | live]
            behind = [i.instance_id for i in counted if i.revision < revision]
            if not behind:
                self.say(f"gateways: {len(counted)} live, all on revision >= {revision}")
                return True
            if time.monotonic() > deadline:
                silent = [
                    f"{i} (silent > {cfg.heartbeat_max_age_s:g} s)" for i in behind if i not in live
                ]
                names = [i for i in behind if i in live] + silent
                self.say(f"gateways still behind revision {revision}: {', '.join(names)}")
                self.unconfirmed = names
                return False
            time.sleep(0.1)

    # --- what MLOps call -----------------------------------------------------------------

    def promote(
        self, target: str, version: int, *, force: bool = False, reason: str = ""
    ) -> list[AuditEvent]:
        """Make `version` the production version of `target`."""
        record = self.registry.get(target, version)
        if record.stage == Stage.PRODUCTION:
            raise GateRefused(f"{target} v{version} is already in production")
        details = self._gates(record, Stage.PRODUCTION, force, reason)
        forced = bool(details["overridden"])
        return self._switch(
            record, Stage.PRODUCTION, reason=reason or "promote", forced=forced, details=details
        )

    def canary(
        self,
        target: str,
        version: int,
        percent: float,
        *,
        force: bool = False,
        reason: str = "",
        salt: str | None = None,
    ) -> list[AuditEvent]:
        """Serve `version` to `percent` % of users (sticky by user), production to the rest."""
        if not 0 < percent <= 100:
            raise GateRefused(f"--percent must be in (0, 100], got {percent}")
        record = self.registry.get(target, version)
        if record.stage == Stage.PRODUCTION:
            raise GateRefused(f"{target} v{version} is the production version already")
        details = self._gates(record, Stage.CANARY, force, reason)
        return self._switch(
            record,
            Stage.CANARY,
            reason=reason or f"canary {percent:g}%",
            forced=bool(details["overridden"]),
            percent=percent,
            salt=salt,
            details=details,
        )

    def shadow(self, target: str, version: int, *, reason: str = "") -> list[AuditEvent]:
        """Score every request of `target` with `version` too; log its scores, never return them."""
        record = self.registry.get(target, version)
        if record.stage == Stage.PRODUCTION:
            raise GateRefused(f"{target} v{version} is the production version already")
        details = self._gates(record, Stage.SHADOW, False, reason)
        return self._switch(record, Stage.SHADOW, reason=reason or "shadow", details=details)

    def stop(self, target: str, version: int, *, reason: str = "") -> list[AuditEvent]:
        """End a canary or shadow: the version goes back to `registered`."""
        record = self.registry.get(target, version)
        if record.stage not in (Stage.CANARY, Stage.SHADOW):
            raise GateRefused(
                f"{target} v{version} is {record.stage}, not a canary or shadow: use rollback "
                "to replace the production version"
            )
        return self._switch(record, Stage.REGISTERED, reason=reason or f"end {record.stage}")

    def rollback(self, target: str, *, to: int | None = None, reason: str = "") -> list[AuditEvent]:
        """Put the previous production version (or `to`) back into production.

        The metric gate is skipped (that version served before); the schema gate is not.
        """
        if to is None:
            previous = self.registry.previous_production(target)
            if previous is None:
                raise GateRefused(f"{target}: no earlier production version to roll back to")
        else:
            previous = self.registry.get(target, to)
        if previous.stage == Stage.PRODUCTION:
            raise GateRefused(f"{target} v{previous.version} is in production already")
        if self.control is not None:
            self.check_artifact(previous)
        self.check_schema(previous)
        return self._switch(
            previous,
            Stage.PRODUCTION,
            reason=reason or "rollback",
            details={"rollback": True},
        )


def register_version(
    registry: Registry,
    model_repository: Path,
    target: str,
    version: int,
    manifest: dict[str, object],
    actor: str,
) -> VersionRecord:
    """Records a version the trainer wrote (idempotent): artifact path and checksum, feature
    contract, training window and metrics, from its manifest."""
    contract = manifest.get("contract")
    training = manifest.get("training")
    metrics = manifest.get("metrics")
    if not isinstance(contract, dict) or not isinstance(training, dict):
        raise RegistryError(f"{target} v{version}: manifest has no contract or training block")
    window = training.get("train_window") or [None, None]
    path = artifact(model_repository, target, version)
    return registry.register(
        target,
        version,
        artifact_path=str(path),
        checksum=file_sha256(path),
        feature_service=str(contract["feature_service"]),
        schema_hash=str(contract["schema_hash"]),
        train_start=window[0],
        train_end=window[1],
        metrics={
            k: float(v)
            for k, v in (metrics if isinstance(metrics, dict) else {}).items()
            if isinstance(v, int | float)
        },
        manifest=dict(manifest),
        actor=actor,
    )


def default_actor() -> str:
    """Who is changing the registry: $SCORING_ACTOR, else user@host."""
    import getpass
    import os
    import socket

    actor = os.environ.get("SCORING_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
