"""Every use of Feast's private internals, in one place, written for feast==FEAST_VERSION.

The platform reads Feast's Redis layout directly (the gateway's fast path), asks the registry
whether it changed without re-reading it, and tears down one project's online rows: none of
this has a public Feast API. Each function here names the internal it wraps; when Feast is
upgraded, tests/core/test_feast_compat.py fails until each of them has been re-checked
against the new version (and FEAST_VERSION moved to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.online_response import TIMESTAMP_POSTFIX
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

FEAST_VERSION = "0.67.0"
# What to re-check against a new Feast before moving FEAST_VERSION to it.
WRAPPED = (
    "FeatureStore._get_provider",
    "RedisOnlineStore._get_client",
    "online_stores.helpers._redis_key (serialize_entity_key + project)",
    "online_stores.helpers._mmh3 (hash fields `<view>:<feature>`)",
    "the `_ts:<view>` hash field (a serialized protobuf Timestamp)",
    "ValueProto field numbers (FLOAT_TAG ... BOOL_TAG) and kinds",
    "online_response.TIMESTAMP_POSTFIX",
    "SqlRegistry._get_last_updated_metadata",
    "Registry._registry_store._filepath",
    "SqliteOnlineStore tables `<project>_<view>` keyed by a serialized `entity_key` column",
)

# `to_dict(include_event_timestamps=True)` names a feature's event time `<feature>__ts`.
TIMESTAMP_SUFFIX: str = TIMESTAMP_POSTFIX

# Wire tags (field number << 3 | wire type) of ValueProto's fixed-width cases, whose bytes the
# Redis path decodes in bulk without a protobuf parse.
FLOAT_TAG, DOUBLE_TAG, INT64_TAG, INT32_TAG, BOOL_TAG = 0x35, 0x29, 0x20, 0x18, 0x38


def provider(store: Any) -> Any:
    """The store's provider (`FeatureStore._get_provider`): its online store, teardown_infra."""
    return store._get_provider()


def redis_client(store: Any) -> Any:
    """The sync redis-py client Feast's RedisOnlineStore made from the store's config
    (`RedisOnlineStore._get_client`), connection settings included."""
    return provider(store).online_store._get_client(store.config.online_store)


def redis_key(project: str, join_key: str, entity_id: str, serialization_version: int) -> bytes:
    """The Redis hash key of one string entity: the serialized EntityKey, then the project
    (`helpers._redis_key`)."""
    key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=entity_id)])
    return bytes(_redis_key(project, key, entity_key_serialization_version=serialization_version))


def delete_entity(store: Any, join_key: str, entity_id: str) -> int:
    """Deletes one string entity's online rows in every view of the store's project (Feast has
    no delete): its Redis hash, or its rows in each SQLite table of the project.

    Returns:
        The Redis keys or SQLite rows deleted.
    """
    config = store.config
    version = config.entity_key_serialization_version
    kind = config.online_store.type
    if kind == "redis":
        deleted: int = redis_client(store).delete(
            redis_key(store.project, join_key, entity_id, version)
        )
        return deleted
    if kind != "sqlite":
        raise NotImplementedError(f"deleting online rows from a {kind} online store")
    import sqlite3

    path = Path(config.online_store.path)
    if not path.is_absolute() and config.repo_path:
        path = Path(config.repo_path) / path
    if not path.exists():
        return 0
    key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=entity_id)])
    blob = serialize_entity_key(key, entity_key_serialization_version=version)
    prefix = f"{store.project}_"
    conn = sqlite3.connect(path)
    try:
        with conn:  # one transaction
            tables = [
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if name.startswith(prefix)
                and "entity_key" in {r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')}
            ]
            return sum(
                conn.execute(f'DELETE FROM "{name}" WHERE entity_key = ?', (blob,)).rowcount
                for name in tables
            )
    finally:
        conn.close()


def redis_field(view: str, feature: str) -> bytes:
    """The hash field of one feature: murmur3 of `<view>:<feature>` (`helpers._mmh3`)."""
    field: bytes = _mmh3(f"{view}:{feature}")
    return field


def redis_timestamp_field(view: str) -> str:
    """The hash field of a view's event time, a serialized protobuf Timestamp."""
    return f"_ts:{view}"


def parse_value(data: bytes) -> Any:
    """One serialized ValueProto as a Python value (a list for list kinds; None when null)."""
    value = Value.FromString(data)
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    out = getattr(value, kind)
    return list(out.val) if kind.endswith("_list_val") else out


def registry_stamp(store: Any) -> object | None:
    """Something that changes whenever the store's registry changes; None when this kind of
    registry cannot say.

    The SQL registry's last-updated time (`SqlRegistry._get_last_updated_metadata`, one small
    query), else the file registry's mtime (`Registry._registry_store._filepath`, one stat).
    """
    registry = store.registry
    last_updated = getattr(registry, "_get_last_updated_metadata", None)
    if last_updated is not None:  # feast.infra.registry.sql.SqlRegistry
        stamp: object | None = last_updated(store.project)
        return stamp
    path = getattr(getattr(registry, "_registry_store", None), "_filepath", None)
    if isinstance(path, Path):
        try:
            return path.stat().st_mtime_ns
        except OSError:
            return None
    return None
