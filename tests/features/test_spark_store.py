"""The Spark profile (features/feature_store.spark.yaml) against the file profile.

Feast's Spark offline store (point-in-time joins in Spark SQL, the trainer's training sets) and
its Spark materialisation engine (Spark writes the online rows to Redis) must answer what the
default file/SQLite profile answers on the same small data. Spark runs in local mode in the
session fixture's JVM (Feast reuses the active session); Redis is a real server (db 11, flushed
here), the registry a SQLite file.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scoring.core import feature_repo
from scoring.core.contract import contract_from_store
from scoring.core.targets import TARGETS, USER_JOIN_KEY
from scoring.datagen.dataset import build_data_set
from scoring.trainer.asof_join import supports
from scoring.trainer.examples import TIMESTAMP, point_in_time_frame

from ..conftest import ROOT, TEXT_CACHE, copy_feature_repo, require
from .test_stores import _reachable, tiny

REDIS_DB = 11
REDIS = f"127.0.0.1:6379,db={REDIS_DB}"
# Materialised by both profiles and compared: a user and an item view, the array-valued
# embedding, and a view with a year's TTL (the others are the same code path).
VIEWS = ("user_behavior", "user_profile", "item_stats", "item_embedding")


@dataclass(frozen=True)
class Profiles:
    file_repo: Path
    spark_repo: Path
    spark_yaml: Path
    end: datetime

    def file_store(self) -> Any:
        return feature_repo.open_store(self.file_repo)

    def spark_store(self) -> Any:
        return feature_repo.open_store(self.spark_repo, self.spark_yaml)


def _redis() -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Iterator[Profiles]:
    """One small data set, applied with both profiles (the Spark one reads a copy of it)."""
    require(_reachable("127.0.0.1", 6379), "Redis on 127.0.0.1:6379")
    root = tmp_path_factory.mktemp("spark-store")
    file_repo = copy_feature_repo(root / "file")
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    build_data_set(tiny(end), file_repo / "data", text_cache=TEXT_CACHE)
    spark_repo = copy_feature_repo(root / "spark")
    shutil.copytree(file_repo / "data", spark_repo / "data")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FEAST_REDIS_CONNECTION", REDIS)
        env.setenv("FEAST_REGISTRY_PATH", f"sqlite:///{root / 'registry.db'}")
        _redis().flushdb()
        feature_repo.apply(file_repo)
        feature_repo.apply(spark_repo, spark_repo / "feature_store.spark.yaml")
        yield Profiles(file_repo, spark_repo, spark_repo / "feature_store.spark.yaml", end)
        _redis().flushdb()


def _defaults() -> Any:
    spec = importlib.util.spec_from_file_location("defaults", ROOT / "features" / "defaults.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_source_follows_the_sources_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from feast import FileSource
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    defaults = _defaults()
    monkeypatch.delenv("SCORING_FEATURE_SOURCES", raising=False)
    monkeypatch.delenv("SCORING_FEATURE_DATA", raising=False)
    source = defaults.table_source("item_stats")
    assert isinstance(source, FileSource) and source.path == "data/item_stats.parquet"

    monkeypatch.setenv("SCORING_FEATURE_SOURCES", "spark")
    source = defaults.table_source("item_stats")
    assert isinstance(source, SparkSource)
    assert source.path == str(ROOT / "features" / "data" / "item_stats.parquet")
    assert (source.file_format, source.timestamp_field) == ("parquet", "event_timestamp")
    monkeypatch.setenv("SCORING_FEATURE_DATA", "s3a://bucket/scoring/data/")
    assert (
        defaults.table_source("item_stats").path == "s3a://bucket/scoring/data/item_stats.parquet"
    )

    monkeypatch.setenv("SCORING_FEATURE_SOURCES", "bigquery")
    with pytest.raises(ValueError, match="SCORING_FEATURE_SOURCES"):
        defaults.table_source("item_stats")


def test_the_profile_sets_the_switch_for_feast(tmp_path: Path) -> None:
    features = ROOT / "features"
    assert feature_repo.profile_environment(features)["SCORING_FEATURE_SOURCES"] == "file"
    production = features / "feature_store.production.yaml"
    assert feature_repo.profile_environment(features, production) == {
        "SCORING_FEATURE_SOURCES": "file"
    }
    env = feature_repo.profile_environment(features, features / "feature_store.spark.yaml")
    assert env["SCORING_FEATURE_SOURCES"] == "spark"
    assert env["SCORING_SPARK__MASTER"]  # a default for the YAML's ${SCORING_SPARK__MASTER}


def test_the_spark_profile_registers_spark_sources_and_engines(profiles: Profiles) -> None:
    from feast import FileSource
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    store = profiles.spark_store()
    assert type(store.config.offline_store).__name__ == "SparkOfflineStoreConfig"
    assert store.config.batch_engine_config["type"] == "spark.engine"
    assert type(store.config.online_store).__name__ == "RedisOnlineStoreConfig"
    for view in store.list_feature_views():
        source = view.batch_source
        assert isinstance(source, SparkSource), view.name
        assert source.file_format == "parquet"
        assert source.path == str(profiles.spark_repo / "data" / f"{view.name}.parquet")
        # Spark reads no nanosecond timestamps: apply rewrote the table with microseconds.
        unit = pq.read_schema(source.path).field("event_timestamp").type.unit
        assert unit == "us", view.name
    # The default profile is untouched: FileSources relative to the repo, pandas' tables.
    for view in profiles.file_store().list_feature_views():
        assert isinstance(view.batch_source, FileSource), view.name
        assert view.batch_source.path == f"data/{view.name}.parquet"
        path = profiles.file_repo / view.batch_source.path
        assert pq.read_schema(path).field("event_timestamp").type.unit == "ns"


def _rows(profiles: Profiles) -> pd.DataFrame:
    """Real impressions, the same an hour and four days later (past short TTLs), and the
    same before the log began and for a user and an item nobody knows."""
    real = pd.read_parquet(profiles.file_repo / "data" / "impressions_item.parquet")
    real = real.sample(8, random_state=4)[[USER_JOIN_KEY, "item_id", TIMESTAMP]]
    shifted = [real.assign(**{TIMESTAMP: real[TIMESTAMP] + pd.Timedelta(d)}) for d in ("1h", "4D")]
    early = real.head(2).assign(**{TIMESTAMP: real[TIMESTAMP].min() - pd.Timedelta("30D")})
    unknown = real.head(2).assign(**{USER_JOIN_KEY: "nobody", "item_id": "nothing"})
    rows = pd.concat([real, *shifted, early, unknown], ignore_index=True)
    rows[TIMESTAMP] = pd.to_datetime(rows[TIMESTAMP], utc=True).dt.floor("s")
    rows["request_ts"] = rows[TIMESTAMP].astype("int64") // 10**9
    return rows


def test_training_sets_through_the_spark_offline_store_match_the_file_profile(
    profiles: Profiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = TARGETS["item_ranker"]
    file_store, spark_store = profiles.file_store(), profiles.spark_store()
    contract = contract_from_store(spark_store, target.feature_service)
    service = spark_store.get_feature_service(contract.service)
    # The trainer's "auto" engine must not read a SparkSource as a local file.
    assert not supports(spark_store, service)
    calls: list[Any] = []
    historical = spark_store.get_historical_features

    def spy(**kwargs: Any) -> Any:
        calls.append(kwargs["features"])
        return historical(**kwargs)

    monkeypatch.setattr(spark_store, "get_historical_features", spy)
    rows = _rows(profiles)

    got = point_in_time_frame(spark_store, target, contract, rows)
    want = point_in_time_frame(file_store, target, contract, rows)

    assert calls and calls[0].name == contract.service  # Feast's point-in-time join, in Spark
    keys = [USER_JOIN_KEY, target.join_key, TIMESTAMP]
    pd.testing.assert_frame_equal(got[keys], want[keys])
    a, b = contract.assemble(got), contract.assemble(want)
    np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-6, atol=1e-6)
    # Both kinds of row are compared: with the views' values and without (defaults).
    stored = [r for r in contract.refs if not r.startswith("item_request")]
    found = want[stored].notna()
    assert found.any(axis=1).sum() >= 8
    assert (~found).all(axis=1).sum() >= 2


def _online(store: Any, rows: list[dict[str, str]], views: list[Any]) -> dict[str, Any]:
    refs = [f"{v.name}:{f.name}" for v in views for f in v.features]
    return dict(
        store.get_online_features(features=refs, entity_rows=rows, full_feature_names=True)
        .to_dict(include_event_timestamps=True)
        .items()
    )


def test_the_spark_engine_materialises_the_online_values_of_the_file_profile(
    profiles: Profiles,
) -> None:
    file_store, spark_store = profiles.file_store(), profiles.spark_store()
    end = datetime.now(UTC)
    feature_repo.materialize(profiles.file_repo, end, full=True, views=VIEWS)
    feature_repo.materialize(profiles.spark_repo, end, profiles.spark_yaml, full=True, views=VIEWS)
    # Spark's executors wrote the rows to Redis (the engine, not the driver's pandas loop).
    assert _redis().dbsize() > 0

    data = profiles.file_repo / "data"
    users = sorted(pd.read_parquet(data / "user_behavior.parquet")[USER_JOIN_KEY].unique())
    items = sorted(pd.read_parquet(data / "item_stats.parquet")["item_id"].unique())
    checked = 0
    for key, ids in ((USER_JOIN_KEY, [*users, "nobody"]), ("item_id", [*items, "nothing"])):
        views = [
            spark_store.get_feature_view(v)
            for v in VIEWS
            if spark_store.get_feature_view(v).entity_columns[0].name == key
        ]
        rows = [{key: i} for i in ids]
        got, want = _online(spark_store, rows, views), _online(file_store, rows, views)
        assert got.keys() == want.keys()
        for column, values in want.items():
            if column == key:
                assert got[column] == values
                continue
            for g, w in zip(got[column], values, strict=True):
                if w is None:
                    assert g is None, column
                else:
                    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6)
                    checked += 1
        # Rows were found (not only the unknown entity's missing values).
        assert sum(v is not None for v in want[f"{views[0].name}__{views[0].features[0].name}"])
    assert checked > 100
