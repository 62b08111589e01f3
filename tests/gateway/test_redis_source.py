"""The direct Redis read gives exactly the Feast SDK's answer, faster; its cache is bounded."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoring.core import feature_repo
from scoring.core.targets import BASKET_TARGET, TARGETS
from scoring.datagen.dataset import build_data_set
from scoring.gateway.cart import CartLayout, cart_values, propose
from scoring.gateway.feature_source import (
    FeastFeatureSource,
    FeatureRequest,
    OnlineFeatures,
    RowsRequest,
)
from scoring.gateway.redis_source import (
    HmgetWire,
    RedisFeatureSource,
    RowCache,
    decode_values,
)

from ..conftest import TEXT_CACHE
from ..features.test_stores import REDIS, production_repo, tiny  # noqa: F401 (fixture)
from .helpers import fetch, frame

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        for x, y in zip(a[col], b[col], strict=True):
            if isinstance(x, list | np.ndarray) or isinstance(y, list | np.ndarray):
                np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=0)
            elif x is None or y is None or (isinstance(x, float) and np.isnan(x)):
                assert (x is None or np.isnan(x)) and (y is None or np.isnan(y)), (col, x, y)
            else:
                assert float(x) == float(y), (col, x, y)


def test_redis_read_equals_the_feast_sdk_read(production_repo: tuple[Path, Path, str]) -> None:  # noqa: F811
    repo, fs_yaml, _ = production_repo
    log = tiny(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    build_data_set(log, repo / "data", text_cache=TEXT_CACHE)
    feature_repo.apply(repo, fs_yaml)
    feature_repo.materialize(repo, fs_yaml=fs_yaml)
    sdk = FeastFeatureSource(repo, fs_yaml)
    fast = RedisFeatureSource(repo, fs_yaml, cache_rows=1000, cache_ttl_s=60)
    now = int(datetime.now(UTC).timestamp())
    cases: list[tuple[str, str, tuple[str, ...], int]] = [
        ("item_ranker", "u_000003", ("i_000001", "i_000007", "nope", "i_000001"), now),
        ("item_ranker", "nobody", ("i_000002", "i_000003"), now),
        ("activity_ranker", "u_000004", ("a_000000", "a_000003", "a_999"), now),
        # Far in the future every view's ttl has passed: both paths expire the same values.
        ("item_ranker", "u_000003", ("i_000001", "i_000002"), now + 90 * 86400),
    ]
    for target_name, user, ids, ts in cases:
        target = TARGETS[target_name]
        contract = sdk.contract(target.feature_service)
        expected = fetch(sdk, contract, target, user, ids, {"request_ts": ts})
        for _ in range(2):  # the second read comes from the cache
            got = fetch(fast, contract, target, user, ids, {"request_ts": ts})
            same(got, expected)
            assert got.attrs["expired_rows"] == expected.attrs["expired_rows"]
            assert got.attrs["feature_age_s"].keys() == expected.attrs["feature_age_s"].keys()
        # The gateway's path: the same read awaited on an event loop (uncached, then cached).
        for _ in range(2):
            request = FeatureRequest(contract, target, user, ids, {"request_ts": ts})
            online = asyncio.run(fast.read(request))
            same(frame(online), expected)
            assert online.expired == expected.attrs["expired_rows"]
    assert fast.cache.hits > 0 and fast.cache.misses > 0
    # A registry change drops the cached rows with the read plans: a view's features may have
    # been added, dropped or reordered since the rows were read.
    assert len(fast.cache) > 0
    fast.catalog.forget()
    assert len(fast.cache) == 0


class HeldReplies:
    """A TCP relay to Redis that can hold back Redis's replies: a stuck store, for real (the
    commands reach Redis and are answered; the answers reach the client only on release), for as
    long as the test says, not for a time that a slow machine might outlast."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.split(":")
        self.upstream = (host, int(port))
        self.holding = False
        self.held: list[tuple[asyncio.StreamWriter, bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        """Listens on a free port of 127.0.0.1; returns its `host:port`."""
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def release(self) -> None:
        """Delivers the held replies, in order, and relays the next ones at once."""
        self.holding = False
        for sink, data in self.held:
            if not sink.is_closing():
                sink.write(data)
        self.held.clear()

    async def close(self) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, replies=False),
            self._pipe(up_reader, writer, replies=True),
        )

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, replies: bool
    ) -> None:
        try:
            while data := await source.read(65536):
                if replies and self.holding:
                    self.held.append((sink, data))
                else:
                    sink.write(data)
        except ConnectionError:
            pass
        finally:  # one side closed (the client, or Redis killing the connection): so is the other
            sink.close()


def test_an_async_read_cut_off_by_its_budget_leaves_the_client_usable(
    production_repo: tuple[Path, Path, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis

    repo, fs_yaml, _ = production_repo
    log = tiny(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    build_data_set(log, repo / "data", text_cache=TEXT_CACHE)
    feature_repo.apply(repo, fs_yaml)
    feature_repo.materialize(repo, fs_yaml=fs_yaml)
    target = TARGETS["item_ranker"]
    mine, theirs = ("u_000003", ("i_000001", "i_000002")), ("u_000004", ("i_000003", "i_000004"))

    async def scenario() -> None:
        relay = HeldReplies(REDIS)
        monkeypatch.setenv("FEAST_REDIS_CONNECTION", await relay.start())
        fast = RedisFeatureSource(repo, fs_yaml, cache_rows=0)  # reads Redis through the relay
        contract = fast.contract(target.feature_service)

        def read(user_ids: tuple[str, tuple[str, ...]]) -> Any:
            user, ids = user_ids
            return fast.read(FeatureRequest(contract, target, user, ids, {"request_ts": 0}))

        expected = frame(await read(mine))
        assert not frame(await read(theirs)).equals(expected)  # replies that would tell

        # A stuck store: the read is cut off by its budget while Redis's reply is held back (the
        # relay holds it until released: a cut-off that waited for the store would never end).
        relay.holding = True
        cut_off = asyncio.ensure_future(asyncio.wait_for(read(theirs), 0.1))
        done, _ = await asyncio.wait({cut_off}, timeout=60)
        assert cut_off in done, "the budget did not cut off a read of a stuck store"
        with pytest.raises(TimeoutError):
            cut_off.result()
        relay.release()  # the cut-off read's reply arrives, late
        same(frame(await read(mine)), expected)  # and is not mistaken for this read's

        # The server drops every client connection (as on a restart or a failover): the next
        # read goes out on a new connection, not to a closed socket.
        admin = redis.Redis.from_url("redis://" + REDIS)
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
        admin.close()
        same(frame(await read(mine)), expected)
        await fast.aclose()
        await relay.close()

    asyncio.run(scenario())


def test_a_prepacked_hmget_is_what_redis_py_sends() -> None:
    from redis.asyncio.connection import Connection

    fields: list[bytes | str] = [b"\x00\xffbinary\r\n", "_ts:user_profile", "é", b""]
    key = b"\x02\x00\x00\x00user_id\x03scoring"
    expected = b"".join(Connection().pack_command("HMGET", key, *fields))
    assert HmgetWire.of(fields).pack(key) == expected


def test_decode_values_bulk_and_fallback() -> None:
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    floats = [Value(float_val=v).SerializeToString() for v in (0.5, 1.25)]
    assert decode_values([floats[0], None, floats[1]]) == [0.5, None, 1.25]
    ints = [Value(int64_val=v).SerializeToString() for v in (3, 127)]
    assert decode_values(ints) == [3, 127]
    mixed = [Value(int64_val=v).SerializeToString() for v in (3, -2, 100_000)]
    assert decode_values(mixed) == [3, -2, 100_000]
    vectors = [Value(float_list_val=FloatList(val=[1.0, 2.0])).SerializeToString()]
    assert decode_values(vectors) == [[1.0, 2.0]]
    assert decode_values([None, None]) == [None, None]


def test_a_mixed_row_decodes_to_what_protobuf_parses() -> None:
    """A user row mixes types, so it is decoded value by value, fixed-width ones without a
    protobuf parse: same values and Python types as the parse, NaN and edge cases included."""
    from feast.protos.feast.types.Value_pb2 import DoubleList, Value

    values = [
        Value(float_val=1.5), Value(float_val=-3.25e-7), Value(float_val=float("nan")),
        Value(double_val=2.0 / 3), Value(int64_val=0), Value(int64_val=127),
        Value(int64_val=128), Value(int64_val=-1), Value(int32_val=3), Value(bool_val=True),
        Value(bool_val=False), Value(string_val="x"), Value(double_list_val=DoubleList(val=[1.0])),
    ]  # fmt: skip
    got = decode_values([v.SerializeToString() for v in values] + [None])
    assert got[-1] is None
    for value, decoded in zip(values, got, strict=False):
        kind = str(value.WhichOneof("val"))
        expected: Any = getattr(value, kind)
        expected = list(expected.val) if kind.endswith("_list_val") else expected
        assert type(decoded) is type(expected), kind
        assert decoded == expected or (decoded != decoded and expected != expected), kind


def test_row_cache_expires_and_stays_bounded() -> None:
    cache = RowCache(max_rows=2, ttl_s=10)
    cache.put(("v", "a"), 1.0, [1], now=0)
    cache.put(("v", "b"), 1.0, [2], now=0)
    assert cache.get(("v", "a"), now=5) == (1.0, [1])
    cache.put(("v", "c"), 1.0, [3], now=5)  # evicts the least recently used: b
    assert len(cache) == 2 and cache.get(("v", "b"), now=5) is None
    assert cache.get(("v", "a"), now=11) is None, "expired"
    assert (cache.hits, cache.misses) == (1, 2)


def test_non_redis_store_is_refused(feature_repo_ready: Any) -> None:
    with pytest.raises(ValueError, match="not redis"):
        RedisFeatureSource(feature_repo_ready.path)


def test_contract_is_reread_when_the_registry_changes_and_kept_while_it_is_down(
    production_repo: tuple[Path, Path, str],  # noqa: F811
) -> None:
    import sqlalchemy
    from feast import FeatureService

    repo, fs_yaml, _ = production_repo
    feature_repo.apply(repo, fs_yaml)
    fast = RedisFeatureSource(repo, fs_yaml)
    service = TARGETS["item_ranker"].feature_service
    first = fast.contract(service)
    assert fast.contract(service) is first  # the registry did not change: not read again

    time.sleep(1.1)  # the SQL registry's update time has a resolution of one second
    view = fast.store.get_feature_view("item_stats")
    fast.store.apply([FeatureService(name="scratch_service", features=[view])])
    second = fast.contract(service)
    assert second is not first and second == first  # read again; the same contract

    # The registry's database goes away (a port nothing listens on): requests go on with the
    # contract read last, and health (Redis) is unaffected; a contract never read cannot be.
    dead = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:9/test")
    fast.store.registry.read_engine = dead
    assert fast.contract(service) is second
    fast.check()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        fast.contract(TARGETS["activity_ranker"].feature_service)


def same_rows(a: OnlineFeatures, b: OnlineFeatures) -> None:
    """Two reads of rows hold the same values (strings included; None and NaN alike)."""
    assert list(a.columns) == list(b.columns)
    for name in a.columns:
        for x, y in zip(a.columns[name], b.columns[name], strict=True):
            if isinstance(x, str) or isinstance(y, str):
                assert x == y, (name, x, y)
            elif x is None or y is None or np.isnan(x) or np.isnan(y):
                assert (x is None or np.isnan(x)) and (y is None or np.isnan(y)), (name, x, y)
            else:
                assert float(x) == float(y), (name, x, y)


def test_the_cart_read_through_redis_equals_the_feast_sdk_read(
    production_repo: tuple[Path, Path, str],  # noqa: F811
) -> None:
    repo, fs_yaml, _ = production_repo
    log = tiny(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    build_data_set(log, repo / "data", text_cache=TEXT_CACHE)
    feature_repo.apply(repo, fs_yaml)
    feature_repo.materialize(repo, fs_yaml=fs_yaml)
    sdk = FeastFeatureSource(repo, fs_yaml)
    fast = RedisFeatureSource(repo, fs_yaml, cache_rows=1000, cache_ttl_s=60)
    basket = TARGETS[BASKET_TARGET]
    service = basket.cart_feature_service
    assert service is not None
    assert fast.stored_features(service) == sdk.stored_features(service)
    layout = CartLayout.of(service, fast.stored_features(service))

    # A cart of the most bought items (they have co-purchase neighbours) and an unknown id.
    events = log.events
    purchases = events[(events["event_type"] == "purchase") & (events["item_id"] != "")]
    bought = purchases["item_id"].value_counts()  # bundle purchases have no item id
    cart = (*bought.index[:3], "nope")
    now = float(datetime.now(UTC).timestamp())
    request = RowsRequest(service, basket.join_key, cart, now)
    expected = asyncio.run(sdk.read_rows(request))
    for _ in range(2):  # the second read comes from the row cache
        got = asyncio.run(fast.read_rows(request))
        same_rows(got, expected)
        assert got.expired == expected.expired
    assert fast.cache.hits > 0
    ids = [got.columns[id_name][row] for id_name, _ in layout.neighbours for row in range(3)]
    assert all(i is None or i == "" or i.startswith("i_") for i in ids), ids
    assert any(isinstance(i, str) and i for i in ids), "neighbour ids come back as strings"
    assert all(v is None for v in (got.columns[name][3] for name in got.columns)), "unknown"
    codes = got.columns[layout.code]
    assert all(isinstance(c, float) and c >= 0 for c in codes[:3]), codes

    proposed = propose(layout, cart, got, limit=50)
    assert proposed and not set(proposed) & set(cart)

    # The basket model reads other features of the same view (item_copurchase) for its
    # candidates: the row cache keeps the two apart, and both sources agree.
    contract = sdk.contract(basket.feature_service)
    values = {"request_ts": int(now), **cart_values(layout, cart, got)}
    candidates = (*proposed[:4], cart[0])  # a cart item too: its cart row is in the cache
    expected_rows = fetch(sdk, contract, basket, "u_000003", candidates, values)
    for _ in range(2):
        same(fetch(fast, contract, basket, "u_000003", candidates, values), expected_rows)
    same_rows(asyncio.run(fast.read_rows(request)), expected)  # the cart's rows, once more
