"""scoring.core.feast_compat against the installed Feast: the version it was written for, and
each internal it wraps, on real stores (SQLite, Redis) and real registries (file, SQL)."""

from __future__ import annotations

import importlib.metadata
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoring.core.feast_compat import (
    BOOL_TAG,
    DOUBLE_TAG,
    FEAST_VERSION,
    FLOAT_TAG,
    INT32_TAG,
    INT64_TAG,
    TIMESTAMP_SUFFIX,
    WRAPPED,
    parse_value,
    provider,
    redis_client,
    redis_field,
    redis_key,
    redis_timestamp_field,
    registry_stamp,
)

from ..conftest import ROOT, require

VIEW = "compat_view"
# One feature per ValueProto case the Redis path decodes without a protobuf parse.
COLUMNS: dict[str, Any] = {
    "f32": np.array([1.5], np.float32),
    "f64": np.array([2.0 / 3], np.float64),
    "i64": np.array([7], np.int64),
    "i32": np.array([3], np.int32),
    "flag": np.array([True]),
}
TAGS = {"f32": FLOAT_TAG, "f64": DOUBLE_TAG, "i64": INT64_TAG, "i32": INT32_TAG, "flag": BOOL_TAG}
RECHECK = (
    "re-check each Feast internal that services/scoring/core/feast_compat.py wraps ("
    + "; ".join(WRAPPED)
    + "), make this file pass, then set FEAST_VERSION there to the new version"
)


def test_the_installed_feast_is_the_one_compat_was_written_for() -> None:
    pinned = re.search(r'"feast==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned is not None, "pyproject.toml: no feast==VERSION pin"
    assert pinned.group(1) == FEAST_VERSION, (
        f"pyproject.toml pins feast=={pinned.group(1)}, feast_compat was written for "
        f"feast {FEAST_VERSION}: {RECHECK}"
    )
    installed = importlib.metadata.version("feast")
    assert installed == FEAST_VERSION, (
        f"feast {installed} is installed, feast_compat was written for feast {FEAST_VERSION}: "
        f"{RECHECK}"
    )


def definitions(tmp_path: Path) -> tuple[Any, Any]:
    """A user entity and one view with a feature of each decoded type (its source is never
    read: rows are written with write_to_online_store)."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float32, Float64, Int32, Int64

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    dtypes = {"f32": Float32, "f64": Float64, "i64": Int64, "i32": Int32, "flag": Bool}
    view = FeatureView(
        name=VIEW,
        entities=[user],
        ttl=timedelta(days=1),
        schema=[Field(name=name, dtype=dtype) for name, dtype in dtypes.items()],
        source=FileSource(path=str(tmp_path / "unused.parquet"), timestamp_field="ts"),
    )
    return user, view


def open_store(online_store: Any, registry: Any) -> Any:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    config = RepoConfig(
        project=f"compat_{uuid.uuid4().hex[:10]}",
        provider="local",
        registry=registry,
        online_store=online_store,
        entity_key_serialization_version=3,
    )
    return FeatureStore(config=config)


def write_row(store: Any, user_id: str, when: datetime) -> None:
    row = pd.DataFrame({"user_id": [user_id], **COLUMNS, "ts": [when]})
    store.write_to_online_store(VIEW, row)


def test_file_registry_stamp_and_the_event_time_suffix(tmp_path: Path) -> None:
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig

    registry_file = tmp_path / "registry.db"
    store = open_store(
        SqliteOnlineStoreConfig(path=str(tmp_path / "online.db")),
        RegistryConfig(path=str(registry_file), cache_ttl_seconds=0),
    )
    store.apply(list(definitions(tmp_path)))
    # The registry file's mtime, the file Feast wrote (None if the path went unseen).
    assert registry_stamp(store) == registry_file.stat().st_mtime_ns

    when = datetime.now(UTC).replace(microsecond=0)
    write_row(store, "u1", when)
    got = store.get_online_features(
        features=[f"{VIEW}:f32"], entity_rows=[{"user_id": "u1"}], full_feature_names=True
    ).to_dict(include_event_timestamps=True)
    assert got[f"{VIEW}__f32{TIMESTAMP_SUFFIX}"] == [int(when.timestamp())]


def test_sql_registry_stamp_is_its_last_update(tmp_path: Path) -> None:
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.infra.registry.sql import SqlRegistryConfig

    store = open_store(
        SqliteOnlineStoreConfig(path=str(tmp_path / "online.db")),
        SqlRegistryConfig(
            registry_type="sql", path=f"sqlite:///{tmp_path / 'registry.db'}", cache_ttl_seconds=0
        ),
    )
    assert registry_stamp(store) is None  # the project was never written
    before = datetime.now(UTC).replace(microsecond=0)
    store.apply(list(definitions(tmp_path)))
    stamp = registry_stamp(store)
    assert isinstance(stamp, datetime) and stamp >= before


def test_parse_value_gives_python_values() -> None:
    from feast.protos.feast.types.Value_pb2 import FloatList, Null, Value

    assert parse_value(Value(string_val="x").SerializeToString()) == "x"
    assert parse_value(Value(float_list_val=FloatList(val=[1.0, 2.5])).SerializeToString()) == [
        1.0,
        2.5,
    ]
    assert parse_value(Value(null_val=Null.NULL).SerializeToString()) is None
    assert parse_value(b"") is None  # no kind set


@pytest.mark.redis
def test_the_redis_layout_is_what_feast_writes(tmp_path: Path) -> None:
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig
    from feast.repo_config import RegistryConfig
    from google.protobuf.timestamp_pb2 import Timestamp

    try:
        up = bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except redis.RedisError:
        up = False
    require(up, "Redis on 127.0.0.1:6379")
    store = open_store(
        RedisOnlineStoreConfig(connection_string="127.0.0.1:6379"),
        RegistryConfig(path=str(tmp_path / "registry.db"), cache_ttl_seconds=0),
    )
    project = store.project
    user, view = definitions(tmp_path)
    store.apply([user, view])
    when = datetime.now(UTC).replace(microsecond=0)
    write_row(store, "u1", when)

    client = redis_client(store)
    assert client.ping()
    key = redis_key(project, "user_id", "u1", store.config.entity_key_serialization_version)
    assert key.endswith(project.encode())
    try:
        fields = [redis_field(VIEW, name) for name in COLUMNS] + [redis_timestamp_field(VIEW)]
        raw = client.hmget(key, fields)
        assert all(raw), f"a field Feast did not write: {dict(zip(fields, raw, strict=True))}"
        assert [parse_value(v) for v in raw[:-1]] == [c[0].item() for c in COLUMNS.values()]
        # The bulk decoder's wire tags: the first byte of each stored value.
        assert [v[0] for v in raw[:-1]] == list(TAGS.values())
        assert Timestamp.FromString(raw[-1]).seconds == int(when.timestamp())
    finally:
        provider(store).teardown_infra(project, [view], [user])
    assert not client.exists(key), "teardown_infra left the project's rows"
