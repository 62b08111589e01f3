"""How fresh each feature view is in the ONLINE store: the event time of its newest materialised
row, read from the store the gateway reads (one implementation per online store kind)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

# Redis has no index by time: a bounded sample of each entity's keys is read (SCAN).
REDIS_SAMPLE_KEYS = 2000
_GLOB_SPECIAL = frozenset(b"*?[]\\")


@dataclass(frozen=True, slots=True)
class OnlineRows:
    """What the online store holds of one feature view.

    Attributes:
        newest: event time of its newest row (UTC); None when it has no row.
        entities: entity keys with a row of the view (among those read, when sampled).
        sampled: only a sample of the keys was read (Redis): `newest` is the newest of those.
        keys_read: entity keys read (Redis: the sample's size; SQLite: all of them).
    """

    newest: datetime | None
    entities: int
    sampled: bool = False
    keys_read: int = 0


class OnlineFreshness(Protocol):
    """Reads the newest online row of feature views from one kind of online store."""

    kind: str

    def newest_rows(self, views: Sequence[Any]) -> dict[str, OnlineRows]:
        """Per view name, what the store holds of it.

        Args:
            views: `feast.FeatureView`s of the store's project.
        """
        ...


def freshness_reader(store: Any) -> OnlineFreshness | None:
    """The reader for the store's online store kind; None for a kind without one."""
    kind = store.config.online_store.type
    if kind == "sqlite":
        return SqliteFreshness(store)
    if kind == "redis":
        return RedisFreshness(store)
    return None


def _view_name(store: Any, view: Any) -> str:
    """The view's name in the online store (a version suffix where Feast versions views)."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    return str(
        compute_versioned_name(view, store.config.registry.enable_online_feature_view_versioning)
    )


class SqliteFreshness:
    """Feast's SQLite online store: one table `<project>_<view>` per view, one row per
    (entity_key, feature) with its `event_ts` (Unix seconds of the naive UTC time)."""

    kind = "sqlite"

    def __init__(self, store: Any) -> None:
        self.store = store
        config = store.config
        path = Path(config.online_store.path)
        if not path.is_absolute() and config.repo_path:
            path = Path(config.repo_path) / path
        self.path = path

    def newest_rows(self, views: Sequence[Any]) -> dict[str, OnlineRows]:
        empty = {view.name: OnlineRows(None, 0) for view in views}
        if not self.path.exists():
            return empty
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
            out = dict(empty)
            for view in views:
                table = f"{self.store.project}_{_view_name(self.store, view)}"
                if table not in tables:
                    continue
                quoted = '"' + table.replace('"', '""') + '"'
                newest, entities = conn.execute(
                    f"SELECT MAX(event_ts), COUNT(DISTINCT entity_key) FROM {quoted}"
                ).fetchone()
                n = int(entities or 0)
                out[view.name] = OnlineRows(_sqlite_time(newest), n, keys_read=n)
            return out
        finally:
            conn.close()


def _sqlite_time(value: Any) -> datetime | None:
    """An `event_ts` as Feast's SQLite store reads it back: its adapter wrote
    int(naive_utc.timestamp()), which `datetime.fromtimestamp` inverts to the naive UTC time."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).replace(tzinfo=UTC)
    if isinstance(value, bytes):
        value = value.decode()
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class RedisFreshness:
    """Feast's Redis online store: one hash per entity key (the serialized entity key, then the
    project), with a `_ts:<view>` field per view holding a protobuf Timestamp.

    Each entity's keys are found with SCAN on Feast's key prefix of its join keys (as Feast's
    own delete_table does); at most `sample` keys per entity are read.
    """

    kind = "redis"

    def __init__(self, store: Any, sample: int = REDIS_SAMPLE_KEYS) -> None:
        self.store = store
        self.sample = sample

    def newest_rows(self, views: Sequence[Any]) -> dict[str, OnlineRows]:
        from feast.infra.key_encoding_utils import serialize_entity_key_prefix
        from google.protobuf.timestamp_pb2 import Timestamp

        from scoring.core import feast_compat

        config = self.store.config
        client = feast_compat.redis_client(self.store)
        by_keys: dict[tuple[str, ...], list[Any]] = {}
        for view in views:
            by_keys.setdefault(tuple(sorted(view.join_keys)), []).append(view)
        out: dict[str, OnlineRows] = {}
        for join_keys, group in by_keys.items():
            prefix = serialize_entity_key_prefix(
                list(join_keys), config.entity_key_serialization_version
            )
            pattern = _glob_escape(prefix) + b"*" + _glob_escape(self.store.project.encode())
            keys: list[bytes] = []
            for key in client.scan_iter(match=pattern, count=500):
                keys.append(key)
                if len(keys) >= self.sample:
                    break
            fields = [feast_compat.redis_timestamp_field(_view_name(self.store, v)) for v in group]
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, fields)
                replies = pipe.execute() if keys else []
            sampled = len(keys) >= self.sample
            for i, view in enumerate(group):
                stamps = [reply[i] for reply in replies if reply[i]]
                newest = max(
                    (_timestamp(Timestamp.FromString(raw)) for raw in stamps), default=None
                )
                out[view.name] = OnlineRows(newest, len(stamps), sampled, len(keys))
        return out


def _timestamp(ts: Any) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def _glob_escape(raw: bytes) -> bytes:
    """Bytes matched literally by a Redis glob pattern."""
    return b"".join(b"\\" + bytes([c]) if c in _GLOB_SPECIAL else bytes([c]) for c in raw)
