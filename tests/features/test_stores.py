"""Both store profiles against real stores, and incremental materialization.

Local: SQLite online store, file registry. Production: Redis online store and a SQL registry on
PostgreSQL (features/feature_store.production.yaml, selected by config only). Production tests
use a unique Feast project per run (Redis keys and registry rows carry it) and delete it after.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scoring.core import feature_repo
from scoring.core.targets import TARGETS
from scoring.datagen.dataset import build_data_set
from scoring.datagen.events import EventLog
from scoring.datagen.synthetic import SyntheticConfig, generate
from scoring.gateway.feature_source import FeastFeatureSource, FeatureRequest

from ..conftest import TEXT_CACHE, copy_feature_repo, require
from ..gateway.helpers import frame

REDIS = "127.0.0.1:6379"
REGISTRY = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
USER = "u_000003"


def tiny(end: datetime) -> EventLog:
    return generate(SyntheticConfig(40, 30, 6, 1500, 400, days=10, organic_per_user=10, end=end))


def online(store: Any, user: str) -> dict[str, Any]:
    return store.get_online_features(
        features=["user_behavior:clicks_1d", "user_behavior:clicks_30d"],
        entity_rows=[{"user_id": user}],
    ).to_dict(include_event_timestamps=True)


def test_new_events_reach_the_online_store_after_materialize_incremental(tmp_path: Path) -> None:
    repo = copy_feature_repo(tmp_path / "features")
    t1 = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    log = tiny(t1)
    build_data_set(log, repo / "data", text_cache=TEXT_CACHE)
    feature_repo.apply(repo)
    # The documented refresh: `feast materialize-incremental END` (first run: since now - ttl).
    feature_repo.run_feast(repo, None, "materialize-incremental", log.end.isoformat())
    store = feature_repo.open_store(repo)
    before = online(store, USER)

    # Five new clicks by the user in the hour after the last refresh.
    when = pd.date_range(log.end + pd.Timedelta(minutes=10), periods=5, freq="10min")
    new = pd.DataFrame(
        {
            "user_id": USER,
            "item_id": "i_000001",
            "event_type": "click",
            "timestamp": when.floor("s"),
            "price": float("nan"),
            "quantity": float("nan"),
            "activity_id": "",
        }
    )
    build_data_set(log.append(EventLog(new)), repo / "data", text_cache=TEXT_CACHE)
    out = feature_repo.run_feast(
        repo, None, "materialize-incremental", datetime.now(UTC).isoformat()
    )
    assert "user_behavior" in out
    after = online(feature_repo.open_store(repo), USER)
    # The five new clicks are online. Windows end at the snapshot time, so a click at the old
    # snapshot's boundary may join too (30d), and older clicks may leave the 1-day window.
    assert after["clicks_30d"][0] >= (before["clicks_30d"][0] or 0) + 5
    assert after["clicks_1d"][0] >= 5
    assert after["clicks_1d__ts"][0] > before["clicks_1d__ts"][0]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def production_repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Path, str]]:
    require(_reachable("127.0.0.1", 6379), "Redis on 127.0.0.1:6379")
    require(_reachable("127.0.0.1", 5432), "PostgreSQL on 127.0.0.1:5432")
    monkeypatch.setenv("FEAST_REDIS_CONNECTION", REDIS)
    monkeypatch.setenv("FEAST_REGISTRY_PATH", REGISTRY)
    project = f"scoring_test_{uuid.uuid4().hex[:10]}"
    repo = copy_feature_repo(tmp_path / "features")
    fs_yaml = repo / "feature_store.production.yaml"
    text = fs_yaml.read_text()
    assert "\nproject: scoring\n" in text
    fs_yaml.write_text(text.replace("\nproject: scoring\n", f"\nproject: {project}\n"))
    yield repo, fs_yaml, project
    try:
        feature_repo.drop_project(feature_repo.open_store(repo, fs_yaml))
    except Exception:  # nothing was applied
        pass


@pytest.mark.redis
@pytest.mark.postgres
def test_production_profile_serves_from_redis_with_a_postgres_registry(
    production_repo: tuple[Path, Path, str],
) -> None:
    import redis
    import sqlalchemy

    repo, fs_yaml, project = production_repo
    log = tiny(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    data = build_data_set(log, repo / "data", text_cache=TEXT_CACHE)
    feature_repo.apply(repo, fs_yaml)
    feature_repo.materialize(repo, fs_yaml=fs_yaml)

    source = FeastFeatureSource(repo, fs_yaml)
    store = source.store
    assert type(store.config.online_store).__name__ == "RedisOnlineStoreConfig"
    assert store.config.registry.registry_type == "sql"
    target = TARGETS["item_ranker"]
    contract = source.contract(target.feature_service)
    ids = ("i_000001", "i_000002")
    got = source.read_blocking(FeatureRequest(contract, target, USER, ids, {"request_ts": 0}))
    behaviour = data.tables["user_behavior"]
    latest = behaviour[behaviour["user_id"] == USER].sort_values("event_timestamp").iloc[-1]
    assert frame(got)["user_behavior__views_30d"].tolist() == [latest["views_30d"]] * 2
    assert contract.assemble(frame(got)).matrix.shape == (2, contract.width)

    client = redis.Redis.from_url("redis://" + REDIS)
    assert any(True for _ in client.scan_iter(match=f"*{project}", count=1000))
    engine = sqlalchemy.create_engine(REGISTRY)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text("select count(*) from feature_views where project_id = :p"),
            {"p": project},
        ).scalar()
    assert rows and rows >= 5

    feature_repo.drop_project(store)
    assert not any(True for _ in client.scan_iter(match=f"*{project}", count=1000))
    with engine.connect() as conn:
        left = conn.execute(
            sqlalchemy.text("select count(*) from feature_views where project_id = :p"),
            {"p": project},
        ).scalar()
    assert left == 0
