"""The online store on a real Redis Cluster (several redis-server processes on loopback):
Feast materialises to it and reads it, and the gateway's direct read, one pipelined write per
node, gives the Feast SDK's answer, also after a node restarts, fails over or a slot moves."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from scoring.core import feast_compat, feature_repo
from scoring.core.targets import TARGETS, USER_JOIN_KEY
from scoring.datagen.dataset import build_data_set
from scoring.devtools.redis_cluster import RedisCluster, redis_cluster_binaries
from scoring.gateway.feature_source import FeastFeatureSource, FeatureRequest
from scoring.gateway.redis_source import RedisFeatureSource

from ..conftest import TEXT_CACHE, copy_feature_repo, require
from ..features.test_stores import tiny
from .helpers import fetch, frame
from .test_redis_source import same

pytestmark = [pytest.mark.redis]

TARGET = TARGETS["item_ranker"]
USER, ITEMS = "u_000003", ("i_000001", "i_000007", "nope", "i_000002", "i_000001")


@dataclass
class ClusterRepo:
    """A feature repo whose online store is `cluster` (features/feature_store.cluster.yaml,
    a SQL registry on SQLite), applied and materialised."""

    cluster: RedisCluster
    repo: Path
    fs_yaml: Path
    registry: Path

    def key(self, join_key: str, entity_id: str) -> bytes:
        return feast_compat.redis_key("scoring", join_key, entity_id, 3)


@contextlib.contextmanager
def cluster_repo(
    tmp: Path, replicas: int = 0, like: ClusterRepo | None = None
) -> Iterator[ClusterRepo]:
    """A new cluster and repo; `like`'s data and registry copied (not built and applied again:
    `feast apply` alone takes about 12 s here), then loaded in full."""
    require(redis_cluster_binaries() is not None, "redis-server / redis-cli not installed")
    with RedisCluster(masters=3, replicas=replicas, root=tmp / "cluster") as cluster:
        with pytest.MonkeyPatch.context() as env:
            registry = tmp / "registry.db"
            env.setenv("FEAST_REDIS_CONNECTION", cluster.connection_string)
            env.setenv("FEAST_REGISTRY_PATH", f"sqlite:///{registry}")
            if like is None:
                repo = copy_feature_repo(tmp / "features")
                fs_yaml = repo / "feature_store.cluster.yaml"
                log = tiny(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
                build_data_set(log, repo / "data", text_cache=TEXT_CACHE)
                feature_repo.apply(repo, fs_yaml)
                feature_repo.materialize(repo, fs_yaml=fs_yaml)
            else:
                repo = Path(shutil.copytree(like.repo, tmp / "features"))
                fs_yaml = repo / like.fs_yaml.name
                shutil.copy(like.registry, registry)
                feature_repo.materialize(repo, fs_yaml=fs_yaml, full=True)
            yield ClusterRepo(cluster, repo, fs_yaml, registry)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRepo]:
    with cluster_repo(tmp_path_factory.mktemp("cluster")) as ready:
        yield ready


@pytest.fixture
def env(cluster: ClusterRepo, monkeypatch: pytest.MonkeyPatch) -> ClusterRepo:
    monkeypatch.setenv("FEAST_REDIS_CONNECTION", cluster.cluster.connection_string)
    monkeypatch.setenv("FEAST_REGISTRY_PATH", f"sqlite:///{cluster.registry}")
    return cluster


def read(source: RedisFeatureSource, user: str, ids: tuple[str, ...], ts: int = 0) -> Any:
    contract = source.contract(TARGET.feature_service)
    request = FeatureRequest(contract, TARGET, user, ids, {"request_ts": ts})
    return frame(asyncio.run(source.read(request)))


def test_feast_materialises_to_the_cluster_and_reads_it(env: ClusterRepo) -> None:
    store = feature_repo.open_store(env.repo, env.fs_yaml)
    assert store.config.online_store.redis_type == "redis_cluster"
    got = store.get_online_features(
        features=["user_behavior:clicks_30d", "item_stats:clicks_7d"],
        entity_rows=[{"user_id": USER, "item_id": "i_000001"}],
    ).to_dict()
    assert got["clicks_30d"][0] is not None and got["clicks_7d"][0] is not None
    # The rows are spread over the masters, not held by one.
    sizes = [node.client().dbsize() for node in env.cluster.primaries()]
    assert sum(1 for size in sizes if size > 0) == 3, sizes
    holders = {env.cluster.master_of(env.key("item_id", i)).port for i in ITEMS}
    assert len(holders) > 1, "the test's items all hash to one node"


def test_cluster_read_equals_the_feast_sdk_read(env: ClusterRepo) -> None:
    sdk = FeastFeatureSource(env.repo, env.fs_yaml)
    fast = RedisFeatureSource(env.repo, env.fs_yaml, cache_rows=1000, cache_ttl_s=60)
    assert fast.cluster is not None
    now = int(datetime.now(UTC).timestamp())
    cases: list[tuple[str, str, tuple[str, ...], int]] = [
        ("item_ranker", USER, ITEMS, now),
        ("item_ranker", "nobody", ("i_000002", "i_000003"), now),
        ("activity_ranker", "u_000004", ("a_000000", "a_000003", "a_999"), now),
        ("item_ranker", USER, tuple(f"i_{i:06d}" for i in range(30)), now),
        ("item_ranker", USER, ("i_000001", "i_000002"), now + 90 * 86400),  # all expired
    ]
    for target_name, user, ids, ts in cases:
        target = TARGETS[target_name]
        contract = sdk.contract(target.feature_service)
        expected = fetch(sdk, contract, target, user, ids, {"request_ts": ts})
        for _ in range(2):  # uncached, then cached
            request = FeatureRequest(contract, target, user, ids, {"request_ts": ts})
            online = asyncio.run(fast.read(request))
            same(frame(online), expected)
            assert online.expired == expected.attrs["expired_rows"]
    assert fast.cache.hits > 0 and fast.cache.misses > 0
    fast.check()


def test_replies_come_back_in_request_order_from_several_nodes(env: ClusterRepo) -> None:
    fast = RedisFeatureSource(env.repo, env.fs_yaml, cache_rows=0)
    assert fast.cluster is not None
    keys = [env.key(USER_JOIN_KEY, USER)] + [env.key("item_id", f"i_{i:06d}") for i in range(20)]
    packed = [b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n" % (len(k), k) for k in keys]
    packed[5] = b"*3\r\n$7\r\nHEXISTS\r\n$%d\r\n%s\r\n$2\r\nno\r\n" % (len(keys[5]), keys[5])
    got = asyncio.run(fast.cluster.send(keys, packed))
    assert got == [1] * 5 + [0] + [1] * 15
    assert len({env.cluster.master_of(k).port for k in keys}) == 3


def test_a_restarted_node_is_read_again_after_one_refresh(env: ClusterRepo) -> None:
    fast = RedisFeatureSource(env.repo, env.fs_yaml, cache_rows=0)
    assert fast.cluster is not None
    expected = read(fast, USER, ITEMS)

    async def scenario() -> None:
        contract = fast.contract(TARGET.feature_service)
        request = FeatureRequest(contract, TARGET, USER, ITEMS, {"request_ts": 0})
        same(frame(await fast.read(request)), expected)  # pooled connections to every node
        assert fast.cluster is not None and fast.cluster.refreshes == 1
        # The user's node goes down and comes back on the same port with its nodes.conf and
        # data: the pooled connections to it are dead, the read retries once on new ones.
        env.cluster.master_of(env.key(USER_JOIN_KEY, USER)).restart()
        env.cluster.wait_ok()
        # A dead pooled connection is either replaced on checkout (redis-py reconnects one it
        # sees closed) or fails the write: then the slot map is read again, once.
        same(frame(await fast.read(request)), expected)
        refreshes = fast.cluster.refreshes
        assert refreshes <= 2
        same(frame(await fast.read(request)), expected)
        assert fast.cluster.refreshes == refreshes
        await fast.aclose()

    asyncio.run(scenario())


def test_a_read_follows_a_slot_in_migration_with_asking(env: ClusterRepo) -> None:
    """ASK: one key of a slot moved to another node while the slot is migrating."""
    fast = RedisFeatureSource(env.repo, env.fs_yaml, cache_rows=0)
    expected = read(fast, USER, ITEMS)
    key = env.key("item_id", "i_000007")
    source = env.cluster.master_of(key)
    dest = next(n for n in env.cluster.primaries() if n.port != source.port)
    slot = int(source.client().execute_command("CLUSTER", "KEYSLOT", key))
    src, dst = source.client(), dest.client()
    src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    try:
        src.execute_command("MIGRATE", "127.0.0.1", dest.port, key, 0, 5000)
        assert dst.pipeline(transaction=False).execute_command("ASKING").exists(key).execute() == [
            True,
            1,
        ]
        same(read(fast, USER, ITEMS), expected)
    finally:  # the slot, and the key, end up on the destination
        for node in env.cluster.primaries():
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        env.cluster.wait_ok()
    # The map read before the move is stale now: MOVED, one refresh, the right answer.
    same(read(fast, USER, ITEMS), expected)
    assert env.cluster.master_of(key).port == dest.port


def test_a_failover_to_a_replica_is_followed(
    cluster: ClusterRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with cluster_repo(tmp_path, replicas=1, like=cluster) as env:
        monkeypatch.setenv("FEAST_REDIS_CONNECTION", env.cluster.connection_string)
        monkeypatch.setenv("FEAST_REGISTRY_PATH", f"sqlite:///{env.registry}")
        sdk = FeastFeatureSource(env.repo, env.fs_yaml)
        contract = sdk.contract(TARGET.feature_service)
        expected: pd.DataFrame = fetch(sdk, contract, TARGET, USER, ITEMS, {"request_ts": 0})
        fast = RedisFeatureSource(env.repo, env.fs_yaml, cache_rows=0)
        assert fast.cluster is not None
        for node in env.cluster.primaries():  # every write reached the replica
            assert node.client().execute_command("WAIT", 1, 5000) == 1

        async def scenario() -> None:
            assert fast.cluster is not None
            request = FeatureRequest(contract, TARGET, USER, ITEMS, {"request_ts": 0})
            same(frame(await fast.read(request)), expected)
            # The user's master crashes; its replica takes over its slots.
            master = env.cluster.master_of(env.key(USER_JOIN_KEY, USER))
            replica = env.cluster.replica_of(master)
            master.kill()
            replica.client().execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
            env.cluster.wait_ok()
            assert env.cluster.master_of(env.key(USER_JOIN_KEY, USER)).port == replica.port
            same(frame(await fast.read(request)), expected)
            assert fast.cluster.refreshes == 2
            await fast.aclose()

        asyncio.run(scenario())


def test_a_source_made_while_the_cluster_is_down_fails_reads_not_its_start(
    env: ClusterRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on one node: the gateway starts, health says the store is unreachable, reads fail
    with a connection error (UNAVAILABLE), until the cluster answers."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from scoring.devtools.local_stack import free_port

    monkeypatch.setenv("FEAST_REDIS_CONNECTION", f"127.0.0.1:{free_port()}")
    fast = RedisFeatureSource(env.repo, env.fs_yaml, cache_rows=0)
    with pytest.raises(Exception, match="(?i)connect"):
        fast.check()
    with pytest.raises(RedisConnectionError):
        read(fast, USER, ITEMS)
