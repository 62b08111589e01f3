"""Promotion gates and stage flows on a real SQLite registry, without Triton (control=None).

The end-to-end switch under load, with Triton, is tests/e2e/test_promotion.py.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scoring.core.settings import RegistrySettings, Settings, TritonSettings
from scoring.registry import Registry, Stage
from scoring.registry.promotion import GateRefused, MetricCheck, Promoter, metric_checks

LIVE = "live-schema"
TARGET = "item_ranker"


def add_version(
    registry: Registry,
    models: Path,
    version: int,
    auc: float,
    logloss: float = 0.3,
    schema: str = LIVE,
) -> None:
    folder = models / TARGET / str(version)
    folder.mkdir(parents=True)
    payload = f"model {version}".encode()
    (folder / "model.pt").write_bytes(payload)
    registry.register(
        TARGET,
        version,
        artifact_path=str(folder / "model.pt"),
        checksum=hashlib.sha256(payload).hexdigest(),
        feature_service="item_ranker_v1",
        schema_hash=schema,
        train_start=None,
        train_end=None,
        metrics={"auc": auc, "ndcg@10": 0.6, "logloss": logloss},
        manifest={},
        actor="trainer",
    )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Registry, Promoter, Path]:
    models = tmp_path / "model_repository"
    settings = Settings(
        triton=TritonSettings(model_repository=models),
        registry=RegistrySettings(url=f"sqlite:///{tmp_path / 'registry.db'}"),
    )
    registry = Registry(settings.registry.url)
    promoter = Promoter(settings, registry, lambda service: LIVE, actor="alice")
    add_version(registry, models, 1, auc=0.80)
    promoter.promote(TARGET, 1)
    return registry, promoter, models


def production(registry: Registry) -> int | None:
    record = registry.routing().targets[TARGET].production
    return record.version if record else None


def test_a_better_version_is_promoted_and_the_old_one_archived(
    setup: tuple[Registry, Promoter, Path],
) -> None:
    registry, promoter, models = setup
    add_version(registry, models, 2, auc=0.81)
    promoter.promote(TARGET, 2, reason="weekly retrain")
    assert production(registry) == 2
    assert registry.get(TARGET, 1).stage == Stage.ARCHIVED
    last = registry.history(TARGET)[-1]
    assert (last.actor, last.reason, last.forced) == ("alice", "weekly retrain", False)


def test_a_schema_mismatch_is_refused_even_when_forced(
    setup: tuple[Registry, Promoter, Path],
) -> None:
    registry, promoter, models = setup
    add_version(registry, models, 2, auc=0.9, schema="other-schema")
    for force in (False, True):
        with pytest.raises(GateRefused, match="live feature service has schema live-schema"):
            promoter.promote(TARGET, 2, force=force, reason="try")
    with pytest.raises(GateRefused, match="schema"):
        promoter.shadow(TARGET, 2)
    assert production(registry) == 1


def test_worse_metrics_are_refused_unless_forced_with_a_reason(
    setup: tuple[Registry, Promoter, Path],
) -> None:
    registry, promoter, models = setup
    add_version(registry, models, 2, auc=0.78)  # 0.02 below production, tolerance 0.005
    with pytest.raises(GateRefused, match=r"auc 0\.7800 vs 0\.8000"):
        promoter.promote(TARGET, 2)
    with pytest.raises(GateRefused, match="worse than production"):  # canaries too
        promoter.canary(TARGET, 2, 10)
    with pytest.raises(GateRefused, match="needs a --reason"):
        promoter.promote(TARGET, 2, force=True)
    assert production(registry) == 1
    promoter.promote(TARGET, 2, force=True, reason="new features need a ramp")
    assert production(registry) == 2
    last = registry.history(TARGET)[-1]
    assert last.forced and last.reason == "new features need a ramp"
    assert last.details is not None and last.details["overridden"] == ["auc"]


def test_within_tolerance_passes_and_logloss_is_lower_is_better(
    setup: tuple[Registry, Promoter, Path],
) -> None:
    registry, promoter, models = setup
    add_version(registry, models, 2, auc=0.797, logloss=0.31)  # logloss 0.01 worse
    with pytest.raises(GateRefused, match="logloss"):
        promoter.promote(TARGET, 2)
    add_version(registry, models, 3, auc=0.797, logloss=0.29)
    promoter.promote(TARGET, 3)
    assert production(registry) == 3


def test_metric_checks_directions() -> None:
    from scoring.registry.types import VersionRecord

    now = datetime.now(UTC)

    def record(**metrics: float) -> VersionRecord:
        return VersionRecord(
            TARGET, 1, Stage.REGISTERED, "", "", "", "", None, None, metrics, None, None,
            now, "test", now,
        )  # fmt: skip

    new, old = record(auc=0.70, logloss=0.20), record(auc=0.75, logloss=0.30)
    checks = metric_checks(new, old, ("auc", "logloss", "missing"), 0.01)
    assert checks == [
        MetricCheck("auc", 0.70, 0.75, False),
        MetricCheck("logloss", 0.20, 0.30, True),
    ]
    assert metric_checks(new, None, ("auc",), 0.0) == []


def test_a_changed_artifact_is_refused(setup: tuple[Registry, Promoter, Path]) -> None:
    registry, promoter, models = setup
    add_version(registry, models, 2, auc=0.81)
    (models / TARGET / "2" / "model.pt").write_bytes(b"tampered")
    with pytest.raises(GateRefused, match="does not match the registered checksum"):
        promoter.check_artifact(registry.get(TARGET, 2))


def test_rollback_restores_the_previous_production_version(
    setup: tuple[Registry, Promoter, Path],
) -> None:
    registry, promoter, models = setup
    add_version(registry, models, 2, auc=0.81)
    add_version(registry, models, 3, auc=0.82)
    promoter.promote(TARGET, 2)
    promoter.promote(TARGET, 3)
    promoter.rollback(TARGET, reason="CTR dropped")
    assert production(registry) == 2
    assert registry.get(TARGET, 3).stage == Stage.ARCHIVED
    promoter.rollback(TARGET, to=1, reason="back to the first")
    assert production(registry) == 1
    events = registry.history(TARGET)
    assert [e.reason for e in events[-4:]] == ["CTR dropped"] * 2 + ["back to the first"] * 2


def test_rollback_without_an_earlier_production_version_is_refused(tmp_path: Path) -> None:
    settings = Settings(registry=RegistrySettings(url=f"sqlite:///{tmp_path / 'r.db'}"))
    registry = Registry(settings.registry.url)
    promoter = Promoter(settings, registry, lambda service: LIVE)
    with pytest.raises(GateRefused, match="no earlier production version"):
        promoter.rollback(TARGET)


def test_canary_shadow_and_stop(setup: tuple[Registry, Promoter, Path]) -> None:
    registry, promoter, models = setup
    add_version(registry, models, 2, auc=0.81)
    with pytest.raises(GateRefused, match="percent"):
        promoter.canary(TARGET, 2, 0)
    promoter.canary(TARGET, 2, 25)
    routing = registry.routing().targets[TARGET]
    assert routing.canary is not None and routing.canary.traffic_percent == 25
    with pytest.raises(GateRefused, match="not a canary or shadow"):
        promoter.stop(TARGET, 1)
    promoter.stop(TARGET, 2)
    promoter.shadow(TARGET, 2)
    routing = registry.routing().targets[TARGET]
    assert routing.canary is None and routing.shadow is not None
    with pytest.raises(GateRefused, match="already"):
        promoter.promote(TARGET, 1)


def test_a_gateway_silent_since_the_switch_began_holds_it_and_a_gone_one_does_not(
    tmp_path: Path,
) -> None:
    """Waiting for gateways: silence during the wait is no confirmation (timeout, False); one
    already silent beyond the heartbeat bound, or one that forgot itself, is not waited for."""
    settings = Settings(
        registry=RegistrySettings(
            url=f"sqlite:///{tmp_path / 'r.db'}", ack_timeout_s=0.6, heartbeat_max_age_s=0.3
        )
    )
    registry = Registry(settings.registry.url)
    said: list[str] = []
    promoter = Promoter(settings, registry, lambda service: LIVE, say=said.append)
    registry.heartbeat("gone", 1)
    time.sleep(0.4)  # "gone" is silent beyond the bound before the switch begins
    assert promoter.live_gateways() == set()
    registry.heartbeat("live", 1)
    registry.heartbeat("frozen", 1)
    expected = {"live", "frozen"}  # what live_gateways() says as the switch begins
    registry.heartbeat("live", 2)
    # "frozen" never confirms and goes stale during the wait: it still counts.
    assert not promoter.wait_for_gateways(2, expected)
    assert said[-1] == "gateways still behind revision 2: frozen (silent > 0.3 s)"
    assert promoter.unconfirmed == ["frozen (silent > 0.3 s)"]  # the CLI exits 3 on it
    # Stopped cleanly: it forgets itself, and the wait is over.
    registry.forget_instance("frozen")
    registry.heartbeat("live", 2)
    assert promoter.wait_for_gateways(2, expected)
    assert said[-1] == "gateways: 1 live, all on revision >= 2"
    assert promoter.unconfirmed == []
    registry.close()
