"""The registry store on SQLite and PostgreSQL: registration, stage invariants, audit, routing."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

import scoring.registry
from scoring.registry import (
    AuditEvent,
    Registry,
    RegistryError,
    Stage,
    VersionConflict,
    VersionNotFound,
    VersionRecord,
)

from . import DIALECTS, database_url

ITEM = "item_ranker"
ACTIVITY = "activity_ranker"


@pytest.fixture(params=DIALECTS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def registry(url: str) -> Iterator[Registry]:
    with Registry(url) as registry:
        yield registry


def checksum(target: str, version: int) -> str:
    return hashlib.sha256(f"{target}/{version}".encode()).hexdigest()


def register(registry: Registry, target: str, version: int, **overrides: object) -> VersionRecord:
    fields: dict[str, object] = {
        "artifact_path": f"model_repository/{target}/{version}/model.pt",
        "checksum": checksum(target, version),
        "feature_service": f"{target}_v1",
        "schema_hash": "schema-1",
        "train_start": "2025-01-01T00:00:00+00:00",
        "train_end": "2025-01-31T00:00:00+00:00",
        "metrics": {"auc": 0.7 + version / 100, "ndcg_at_10": 0.4},
        "manifest": {"target": target, "version": version, "epochs": 6},
        "actor": "trainer",
        **overrides,
    }
    return registry.register(target, version, **fields)  # type: ignore[arg-type]


def stages(registry: Registry, target: str = ITEM) -> dict[int, Stage]:
    return {v.version: v.stage for v in registry.versions(target)}


def replay(events: Iterable[AuditEvent]) -> dict[tuple[str, int], Stage]:
    """Stages rebuilt from the audit trail alone; each event must start where the last ended."""
    state: dict[tuple[str, int], Stage] = {}
    for event in events:
        key = (event.target, event.version)
        assert event.from_stage == state.get(key), event
        state[key] = event.to_stage
    return state


def test_public_api_is_what_the_package_imports() -> None:
    # As httpx's test_exported_members: __all__ lists every public name the package holds (its
    # submodules aside), sorted, so an import left out of __all__ (or a stale entry) fails.
    public = [
        name
        for name, value in vars(scoring.registry).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    ]
    assert scoring.registry.__all__ == sorted(public)


def test_register_stores_the_version_and_is_idempotent(registry: Registry) -> None:
    before = datetime.now(UTC)
    record = register(registry, ITEM, 1)
    assert record.stage is Stage.REGISTERED
    assert record.checksum == checksum(ITEM, 1)
    assert record.metrics == {"auc": pytest.approx(0.71), "ndcg_at_10": 0.4}
    assert record.created_by == "trainer"
    assert record.created_at.tzinfo is not None
    assert record.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= record.created_at <= datetime.now(UTC)
    assert registry.get(ITEM, 1) == record
    assert registry.manifest(ITEM, 1) == {"target": ITEM, "version": 1, "epochs": 6}

    again = register(registry, ITEM, 1, actor="someone-else")
    assert again == record
    [event] = registry.history()
    assert (event.version, event.from_stage, event.to_stage) == (1, None, Stage.REGISTERED)
    assert event.actor == "trainer"


def test_nan_metrics_and_manifest_values_are_stored_as_json_can_hold_them(
    registry: Registry,
) -> None:
    """Evaluations have NaN (a baseline's logloss); PostgreSQL's json type refuses NaN."""
    nan = float("nan")
    register(
        registry,
        ITEM,
        1,
        metrics={"auc": 0.7, "purchase_auc": nan},
        manifest={"table": {"popularity": {"logloss": nan, "auc": 0.6}}, "x": [float("inf")]},
    )
    assert registry.get(ITEM, 1).metrics == {"auc": 0.7}
    assert registry.manifest(ITEM, 1) == {
        "table": {"popularity": {"logloss": None, "auc": 0.6}},
        "x": [None],
    }


def test_register_with_another_checksum_conflicts(registry: Registry) -> None:
    register(registry, ITEM, 1)
    with pytest.raises(VersionConflict, match="item_ranker v1"):
        register(registry, ITEM, 1, checksum="0" * 64)
    with pytest.raises(RegistryError, match="item_ranker v2: checksum"):
        register(registry, ITEM, 2, checksum="not-a-sha256")
    assert [v.checksum for v in registry.versions()] == [checksum(ITEM, 1)]
    assert len(registry.history()) == 1


def test_unknown_versions_are_not_found(registry: Registry) -> None:
    register(registry, ITEM, 1)
    with pytest.raises(VersionNotFound, match="item_ranker v7"):
        registry.get(ITEM, 7)
    with pytest.raises(VersionNotFound, match="item_ranker v7"):
        registry.set_stage(ITEM, 7, Stage.PRODUCTION, actor="alice")
    with pytest.raises(VersionNotFound, match="activity_ranker v1"):
        registry.manifest(ACTIVITY, 1)


def test_versions_are_ordered_by_target_and_version(registry: Registry) -> None:
    for target, version in [(ITEM, 2), (ACTIVITY, 1), (ITEM, 10), (ITEM, 1)]:
        register(registry, target, version)
    assert [(v.target, v.version) for v in registry.versions()] == [
        (ACTIVITY, 1),
        (ITEM, 1),
        (ITEM, 2),
        (ITEM, 10),
    ]
    assert [v.version for v in registry.versions(ITEM)] == [1, 2, 10]


def test_a_new_production_version_archives_the_previous_one(registry: Registry) -> None:
    for version in (1, 2, 3):
        register(registry, ITEM, version)
    register(registry, ACTIVITY, 1)
    registry.set_stage(ACTIVITY, 1, Stage.PRODUCTION, actor="alice")
    registry.set_stage(ITEM, 1, Stage.PRODUCTION, actor="alice")

    events = registry.set_stage(
        ITEM, 2, Stage.PRODUCTION, actor="bob", reason="better auc", forced=True
    )
    assert [(e.version, e.from_stage, e.to_stage) for e in events] == [
        (1, Stage.PRODUCTION, Stage.ARCHIVED),
        (2, Stage.REGISTERED, Stage.PRODUCTION),
    ]
    assert all((e.actor, e.reason, e.forced) == ("bob", "better auc", True) for e in events)
    assert events[0].id < events[1].id
    assert stages(registry) == {1: Stage.ARCHIVED, 2: Stage.PRODUCTION, 3: Stage.REGISTERED}
    # Other targets keep their production version.
    assert stages(registry, ACTIVITY) == {1: Stage.PRODUCTION}


@pytest.mark.parametrize("percent", [None, 0, -5, 100.5, float("nan")])
def test_canary_needs_a_percent_in_range(registry: Registry, percent: float | None) -> None:
    register(registry, ITEM, 1)
    with pytest.raises(RegistryError, match="item_ranker v1: canary traffic_percent"):
        registry.set_stage(ITEM, 1, Stage.CANARY, actor="alice", traffic_percent=percent)
    assert stages(registry) == {1: Stage.REGISTERED}
    assert len(registry.history()) == 1


def test_percent_and_salt_are_for_canaries_only(registry: Registry) -> None:
    register(registry, ITEM, 1)
    with pytest.raises(RegistryError, match="canary only"):
        registry.set_stage(ITEM, 1, Stage.SHADOW, actor="alice", traffic_percent=5)
    with pytest.raises(RegistryError, match="canary only"):
        registry.set_stage(ITEM, 1, Stage.PRODUCTION, actor="alice", salt="s")


def test_canary_percent_and_salt(registry: Registry) -> None:
    for version in (1, 2, 3):
        register(registry, ITEM, version)
    registry.set_stage(ITEM, 1, Stage.PRODUCTION, actor="alice")

    [event] = registry.set_stage(ITEM, 2, Stage.CANARY, actor="alice", traffic_percent=5)
    assert (event.to_stage, event.traffic_percent) == (Stage.CANARY, 5.0)
    canary = registry.get(ITEM, 2)
    assert (canary.traffic_percent, canary.experiment_salt) == (5.0, "item_ranker:v2")

    # Canary again with a new percent: audited, and the salt (the user split) is kept.
    [event] = registry.set_stage(
        ITEM, 2, Stage.CANARY, actor="bob", reason="ramp up", traffic_percent=100
    )
    assert (event.from_stage, event.to_stage, event.traffic_percent) == (
        Stage.CANARY,
        Stage.CANARY,
        100.0,
    )
    assert registry.get(ITEM, 2).traffic_percent == 100.0
    assert registry.get(ITEM, 2).experiment_salt == "item_ranker:v2"

    # Another canary demotes this one to registered and clears its percent and salt.
    events = registry.set_stage(
        ITEM, 3, Stage.CANARY, actor="bob", traffic_percent=10, salt="exp-42"
    )
    assert [(e.version, e.to_stage) for e in events] == [
        (2, Stage.REGISTERED),
        (3, Stage.CANARY),
    ]
    old = registry.get(ITEM, 2)
    assert (old.stage, old.traffic_percent, old.experiment_salt) == (Stage.REGISTERED, None, None)
    assert registry.get(ITEM, 3).experiment_salt == "exp-42"

    # Canary to production: it moves, the canary slot is empty, percent and salt cleared.
    events = registry.set_stage(ITEM, 3, Stage.PRODUCTION, actor="bob")
    assert [(e.version, e.from_stage, e.to_stage) for e in events] == [
        (1, Stage.PRODUCTION, Stage.ARCHIVED),
        (3, Stage.CANARY, Stage.PRODUCTION),
    ]
    production = registry.get(ITEM, 3)
    assert (production.traffic_percent, production.experiment_salt) == (None, None)
    routing = registry.routing().targets[ITEM]
    assert routing.production == production
    assert routing.canary is None


def test_a_new_shadow_returns_the_old_one_to_registered(registry: Registry) -> None:
    for version in (1, 2):
        register(registry, ITEM, version)
    registry.set_stage(ITEM, 1, Stage.SHADOW, actor="alice")
    events = registry.set_stage(ITEM, 2, Stage.SHADOW, actor="alice")
    assert [(e.version, e.to_stage) for e in events] == [
        (1, Stage.REGISTERED),
        (2, Stage.SHADOW),
    ]
    assert events[0].details == {"replaced_by": 2}
    assert stages(registry) == {1: Stage.REGISTERED, 2: Stage.SHADOW}


def test_previous_production_is_the_rollback_target(registry: Registry) -> None:
    for version in (1, 2, 3):
        register(registry, ITEM, version)
    assert registry.previous_production(ITEM) is None
    registry.set_stage(ITEM, 1, Stage.PRODUCTION, actor="alice")
    assert registry.previous_production(ITEM) is None

    registry.set_stage(ITEM, 2, Stage.PRODUCTION, actor="alice")
    previous = registry.previous_production(ITEM)
    assert previous is not None
    assert (previous.version, previous.stage) == (1, Stage.ARCHIVED)

    # Roll back to 1: the version to return to is now 2.
    registry.set_stage(ITEM, 1, Stage.PRODUCTION, actor="alice", reason="rollback")
    previous = registry.previous_production(ITEM)
    assert previous is not None and previous.version == 2
    # A canary that never was production is no rollback target.
    registry.set_stage(ITEM, 3, Stage.CANARY, actor="alice", traffic_percent=5)
    previous = registry.previous_production(ITEM)
    assert previous is not None and previous.version == 2
    assert registry.previous_production(ACTIVITY) is None


def test_audit_trail_is_complete_and_ordered(registry: Registry) -> None:
    for version in (1, 2, 3):
        register(registry, ITEM, version, actor="trainer")
    register(registry, ACTIVITY, 1, actor="trainer")
    changes: list[tuple[int, Stage, dict[str, object]]] = [
        (1, Stage.PRODUCTION, {}),
        (2, Stage.SHADOW, {"details": {"ticket": "ML-1"}}),
        (2, Stage.CANARY, {"traffic_percent": 10}),
        (3, Stage.CANARY, {"traffic_percent": 20, "forced": True}),
        (3, Stage.PRODUCTION, {"reason": "canary healthy"}),
        (3, Stage.ARCHIVED, {"reason": "incident"}),
    ]
    for version, stage, extra in changes:
        registry.set_stage(ITEM, version, stage, actor=f"op{version}", **extra)  # type: ignore[arg-type]

    history = registry.history()
    assert [e.id for e in history] == sorted(e.id for e in history)
    assert len({e.id for e in history}) == len(history)
    assert [e.at for e in history] == sorted(e.at for e in history)
    # Replaying the trail gives exactly the stages the versions are in.
    assert replay(history) == {(v.target, v.version): v.stage for v in registry.versions()}

    item = registry.history(ITEM)
    assert [(e.version, e.from_stage, e.to_stage, e.actor) for e in item[3:]] == [
        (1, Stage.REGISTERED, Stage.PRODUCTION, "op1"),
        (2, Stage.REGISTERED, Stage.SHADOW, "op2"),
        (2, Stage.SHADOW, Stage.CANARY, "op2"),
        (2, Stage.CANARY, Stage.REGISTERED, "op3"),  # demoted by the new canary's operator
        (3, Stage.REGISTERED, Stage.CANARY, "op3"),
        (1, Stage.PRODUCTION, Stage.ARCHIVED, "op3"),
        (3, Stage.CANARY, Stage.PRODUCTION, "op3"),
        (3, Stage.PRODUCTION, Stage.ARCHIVED, "op3"),
    ]
    assert item[4].details == {"ticket": "ML-1"}
    assert [e.forced for e in item[6:8]] == [True, True]
    assert [e.reason for e in item[8:]] == ["canary healthy", "canary healthy", "incident"]
    assert {e.target for e in item} == {ITEM}
    assert registry.history(ITEM, limit=2) == item[-2:]
    assert registry.history(ACTIVITY)[0].to_stage is Stage.REGISTERED


def test_routing_and_revision_follow_every_stage_change(registry: Registry) -> None:
    assert registry.revision() == 0
    assert registry.routing().revision == 0
    assert registry.routing().targets == {}

    register(registry, ITEM, 1)
    register(registry, ITEM, 2)
    routing = registry.routing()
    assert routing.revision == registry.revision() > 0
    item = routing.targets[ITEM]
    assert (item.production, item.canary, item.shadow) == (None, None, None)

    seen = [routing.revision]
    registry.set_stage(ITEM, 1, Stage.PRODUCTION, actor="alice")
    registry.set_stage(ITEM, 2, Stage.SHADOW, actor="alice")
    routing = registry.routing()
    assert routing.revision == registry.revision() > seen[-1]
    seen.append(routing.revision)
    item = routing.targets[ITEM]
    assert item.production is not None and item.production.version == 1
    assert item.shadow is not None and item.shadow.version == 2
    assert item.canary is None

    registry.set_stage(ITEM, 2, Stage.CANARY, actor="alice", traffic_percent=25)
    routing = registry.routing()
    assert routing.revision == registry.revision() > seen[-1]
    item = routing.targets[ITEM]
    assert item.canary is not None
    assert (item.canary.version, item.canary.traffic_percent) == (2, 25.0)
    assert item.shadow is None
    # Registering a new version is an event too: its routing does not change but the revision does.
    before = routing.revision
    register(registry, ITEM, 3)
    assert registry.revision() > before


def test_a_second_registry_on_the_same_database_sees_the_changes(
    registry: Registry, url: str
) -> None:
    register(registry, ITEM, 1)
    with Registry(url) as other:
        other.set_stage(ITEM, 1, Stage.PRODUCTION, actor="cli")
        assert registry.revision() == other.revision()
    production = registry.routing().targets[ITEM].production
    assert production is not None and production.version == 1


def test_heartbeats_upsert_and_expire(registry: Registry) -> None:
    registry.heartbeat("gateway-a", 1, {"host": "a"})
    registry.heartbeat("gateway-b", 1)
    registry.heartbeat("gateway-a", 2, {"host": "a", "targets": 2})
    live = registry.instances(max_age_s=60)
    assert [(i.instance_id, i.revision, i.detail) for i in live] == [
        ("gateway-a", 2, {"host": "a", "targets": 2}),
        ("gateway-b", 1, None),
    ]
    assert all(i.heartbeat_at.utcoffset() == timedelta(0) for i in live)

    time.sleep(0.3)  # gateway-a's last heartbeat is now older than 0.2 s, for good
    # gateway-b's new one must still be younger than 0.2 s when read back, which a stalled
    # machine can miss: beat again until it is (a wrong expiry never gets there).
    deadline = time.monotonic() + 30
    while True:
        registry.heartbeat("gateway-b", 3)
        fresh = [i.instance_id for i in registry.instances(max_age_s=0.2)]
        if fresh == ["gateway-b"] or time.monotonic() > deadline:
            break
    assert fresh == ["gateway-b"]
    registry.forget_instance("gateway-b")
    assert [i.instance_id for i in registry.instances(max_age_s=60)] == ["gateway-a"]


def test_concurrent_promoters_leave_exactly_one_production(url: str) -> None:
    """Promoters in separate processes (here: threads with their own engines) race."""
    with Registry(url) as setup:
        for version in (1, 2, 3):
            register(setup, ITEM, version)
    rounds = 8
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def promote(version: int) -> None:
        with Registry(url, migrate=False) as registry:
            for _ in range(rounds):
                barrier.wait(timeout=30)
                try:
                    registry.set_stage(ITEM, version, Stage.PRODUCTION, actor=f"op{version}")
                except BaseException as error:  # reported below
                    errors.append(error)

    threads = [threading.Thread(target=promote, args=(v,)) for v in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []

    with Registry(url, migrate=False) as registry:
        assert sorted(stages(registry).values()) == [
            Stage.ARCHIVED,
            Stage.ARCHIVED,
            Stage.PRODUCTION,
        ]
        history = registry.history(ITEM)
        assert replay(history) == {(ITEM, v.version): v.stage for v in registry.versions()}
        promotions = [e for e in history if e.to_stage is Stage.PRODUCTION]
        assert len(promotions) == 3 * rounds
        assert registry.revision() == history[-1].id
