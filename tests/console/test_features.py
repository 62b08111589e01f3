"""The Features page and its JSON on the real Feast repo: the catalogue (every view and feature
with dtype, default and ttl), who uses each feature, schema hashes, freshness in the SQLite and
Redis online stores (a stale view flagged), and default shares from a real gateway metrics
endpoint."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prometheus_client import start_http_server
from starlette.testclient import TestClient

from scoring.console.app import create_app
from scoring.console.freshness import RedisFreshness, SqliteFreshness
from scoring.core import feature_repo
from scoring.core.contract import DEFAULT_TAG, contract_from_store
from scoring.core.settings import ConsoleSettings, FeastSettings, RegistrySettings, Settings
from scoring.gateway.prometheus import GatewayMetrics
from scoring.registry import Registry

from ..conftest import FeatureRepo, free_port, require
from ..features.test_stores import REDIS, _reachable


def strict_json(text: str) -> Any:
    """JSON without NaN or Infinity."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def settings_for(
    tmp_path: Path, repo: Path, fs_yaml: Path | None = None, **console: Any
) -> Settings:
    return Settings(
        registry=RegistrySettings(url=f"sqlite:///{tmp_path}/registry.db"),
        feast=FeastSettings(repo_path=repo, fs_yaml=fs_yaml),
        console=ConsoleSettings(**console),
    )


@pytest.fixture
def client(tmp_path: Path, feature_repo_ready: FeatureRepo) -> Iterator[TestClient]:
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    with TestClient(
        create_app(settings_for(tmp_path, feature_repo_ready.path, metrics_urls=[dead]))
    ) as c:
        yield c


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def test_every_view_and_feature_is_listed_with_dtype_default_and_ttl(
    client: TestClient, feature_repo_ready: FeatureRepo
) -> None:
    store = feature_repo_ready.store()
    answer = client.get("/api/v1/features")
    assert answer.status_code == 200
    cat = strict_json(answer.text)
    views = by_name(cat["views"])
    for view in store.list_feature_views():
        got = views[view.name]
        assert got["kind"] == "feature_view"
        assert got["ttl_s"] == (view.ttl.total_seconds() if view.ttl else None)
        assert got["entities"] == list(view.entities)
        assert got["owner"] == view.tags["owner"]
        features = by_name(got["features"])
        assert list(features) == [f.name for f in view.features]
        for f in view.features:
            assert features[f.name]["dtype"] == str(f.dtype)
            declared = f.tags.get(DEFAULT_TAG)  # none on a String feature (cp_id_00)
            expected = float(declared) if declared is not None else None
            assert features[f.name]["default"] == expected
            assert features[f.name]["description"] == f.description
    for odfv in store.list_on_demand_feature_views():
        got = views[odfv.name]
        assert got["kind"] == "on_demand_feature_view" and got["freshness"] is None
        for f in odfv.features:
            feature = by_name(got["features"])[f.name]
            assert feature["default"] == float(odfv.tags[f"{DEFAULT_TAG}:{f.name}"])
    assert len(views) == len(store.list_feature_views()) + len(store.list_on_demand_feature_views())
    entities = by_name(cat["entities"])
    assert entities["user"]["join_keys"] == ["user_id"]
    assert entities["item"]["value_type"] == "STRING"
    # The session's repo was just materialised: nothing is stale.
    assert cat["stale_views"] == []
    assert views["user_behavior"]["freshness"]["store"] == "sqlite"
    assert views["user_behavior"]["freshness"]["entities"] > 0
    embedding = by_name(views["item_embedding"]["features"])["embedding"]
    assert embedding["dtype"] == "Array(Float32)" and embedding["length"] == 16

    page = client.get("/features")
    assert page.status_code == 200
    assert "item_embedding" in page.text and "Array(Float32)" in page.text
    assert "Stale feature views" not in page.text


def test_services_targets_and_models_using_a_feature(
    tmp_path: Path, feature_repo_ready: FeatureRepo
) -> None:
    store = feature_repo_ready.store()
    url = f"sqlite:///{tmp_path}/registry.db"
    registry = Registry(url)
    hash_ = contract_from_store(store, "item_ranker_v1").schema_hash
    registry.register(
        "item_ranker",
        1,
        artifact_path="/nowhere/1",
        checksum="c" * 64,
        feature_service="item_ranker_v1",
        schema_hash=hash_,
        train_start=None,
        train_end=None,
        metrics={"auc": 0.7},
        manifest={},
        actor="test",
    )
    registry.close()
    with TestClient(create_app(settings_for(tmp_path, feature_repo_ready.path))) as client:
        cat = strict_json(client.get("/api/v1/features").text)
        page = client.get("/features").text
    services = by_name(cat["services"])
    assert services["item_ranker_v1"]["schema_hash"] == hash_
    assert services["item_ranker_v1"]["targets"] == ["item_ranker"]
    assert services["item_ranker_v1"]["models"] == [
        {"target": "item_ranker", "version": 1, "stage": "registered"}
    ]
    # A service with String features is not a model contract: its error, not a failed page.
    cart = services["basket_cart_v1"]
    assert cart["schema_hash"] is None and "not numeric" in cart["contract_error"]
    assert cart["targets"] == ["basket_completer"]
    assert cart["contract_error"] in page
    views = by_name(cat["views"])
    views_1d = by_name(views["user_behavior"]["features"])["views_1d"]
    assert set(views_1d["services"]) == {
        "item_ranker_v1",
        "activity_ranker_v1",
        "basket_completer_v1",
        "bundle_ranker_v1",
    }
    assert set(views_1d["targets"]) == {
        "item_ranker",
        "activity_ranker",
        "basket_completer",
        "bundle_ranker",
    }
    assert {"target": "item_ranker", "version": 1, "stage": "registered"} in views_1d["models"]
    cp_id = by_name(views["item_copurchase"]["features"])["cp_id_00"]
    assert cp_id["services"] == ["basket_cart_v1"] and cp_id["targets"] == ["basket_completer"]
    # A feature no service reads (the view feeds on-demand features only).
    signup = by_name(views["user_profile"]["features"])["signup_ts"]
    assert signup["services"] == [] and signup["models"] == []
    # No gateway alive, none configured: said, not failed.
    assert cat["metrics_note"] == "no gateway metrics"


class MetricsEndpoint:
    """A gateway's real metrics (GatewayMetrics) on a real HTTP endpoint on 127.0.0.1."""

    def __init__(self) -> None:
        self.metrics = GatewayMetrics()
        port = free_port()
        self.server, _ = start_http_server(port, addr="127.0.0.1", registry=self.metrics.registry)
        self.url = f"http://127.0.0.1:{port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("found_by", ["settings", "heartbeat"])
def test_default_shares_from_the_gateway_metrics(
    tmp_path: Path, feature_repo_ready: FeatureRepo, found_by: str
) -> None:
    contract = contract_from_store(feature_repo_ready.store(), "item_ranker_v1")
    endpoint = MetricsEndpoint()
    try:
        # 4 rows: the user unknown in all (every user feature defaulted), item_stats in one.
        frame: dict[str, list[Any]] = {
            f.ref: [[0.5] * f.length] * 4 if f.is_vector else [1.0] * 4 for f in contract.features
        }
        for f in contract.features:
            if f.entity == "user":
                frame[f.ref] = [None] * 4
        frame["item_stats__price"] = [1.0, None, 2.0, 3.0]
        endpoint.metrics.count_defaults(contract, contract.assemble(pd.DataFrame(frame)).indicators)
        dead = f"http://127.0.0.1:{free_port()}/metrics"
        if found_by == "settings":
            settings = settings_for(
                tmp_path, feature_repo_ready.path, metrics_urls=[endpoint.url, dead]
            )
        else:
            settings = settings_for(tmp_path, feature_repo_ready.path)
            registry = Registry(settings.registry.url)
            registry.heartbeat("gw-1", 0, {"metrics_url": endpoint.url})
            registry.close()
        with TestClient(create_app(settings)) as client:
            cat = strict_json(client.get("/api/v1/features").text)
            page = client.get("/features").text
    finally:
        endpoint.close()
    assert cat["metrics_note"] is None
    errors = {s["url"]: s["error"] for s in cat["metrics_sources"]}
    assert errors[endpoint.url] is None
    if found_by == "settings":
        assert "not reachable" in errors[dead]
    views = by_name(cat["views"])
    price = by_name(views["item_stats"]["features"])["price"]
    assert price["default_share"] == pytest.approx(0.25)
    assert price["default_shares"] == [
        {"service": "item_ranker_v1", "defaulted_rows": 1.0, "rows": 4.0, "share": 0.25}
    ]
    segment = by_name(views["user_profile"]["features"])["segment"]
    # Read by four services; only item_ranker_v1 was served: all its rows defaulted.
    assert segment["default_share"] == 1.0
    rating = by_name(views["item_stats"]["features"])["rating"]
    assert rating["default_share"] == 0.0
    assert by_name(cat["services"])["item_ranker_v1"]["rows"] == 4.0
    assert by_name(cat["services"])["activity_ranker_v1"]["rows"] is None
    assert "25.0%" in page and "no gateway metrics" not in page


def private_repo(tmp_path: Path, repo: FeatureRepo) -> Path:
    """A copy of the session's applied and materialised repo, online store included."""
    dest = tmp_path / "features"
    shutil.copytree(repo.path, dest, ignore=shutil.ignore_patterns("__pycache__", "served"))
    return dest


def old_rows(store: Any, view: str, at: datetime) -> pd.DataFrame:
    """One row per entity of the view's offline table, all timed `at`."""
    fv = store.get_feature_view(view)
    table = pd.read_parquet(Path(store.repo_path) / fv.batch_source.path)
    latest = table.sort_values("event_timestamp").groupby(fv.join_keys[0]).tail(1).copy()
    latest["event_timestamp"] = at
    return latest


def test_a_view_older_than_its_ttl_is_flagged_stale(
    tmp_path: Path, feature_repo_ready: FeatureRepo
) -> None:
    repo = private_repo(tmp_path, feature_repo_ready)
    store = feature_repo.open_store(repo)
    online = repo / "data" / "online_store.db"
    with sqlite3.connect(online) as conn:  # only rows older than the 2-day ttl, and none
        conn.execute('DELETE FROM "scoring_user_behavior"')
        conn.execute('DELETE FROM "scoring_item_stats"')
    conn.close()
    five_days_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=5)
    store.write_to_online_store("user_behavior", old_rows(store, "user_behavior", five_days_ago))
    assert (
        SqliteFreshness(store)
        .newest_rows([store.get_feature_view("user_behavior")])["user_behavior"]
        .newest
        == five_days_ago
    )

    with TestClient(create_app(settings_for(tmp_path, repo))) as client:
        cat = strict_json(client.get("/api/v1/features").text)
        view = strict_json(client.get("/api/v1/features/views/user_behavior").text)
        page = client.get("/features")
        detail = client.get("/features/views/user_behavior")
    assert view["freshness"]["stale"] is True
    assert view["freshness"]["newest_event_at"] == five_days_ago.isoformat().replace("+00:00", "Z")
    assert view["freshness"]["age_s"] == pytest.approx(5 * 86400, abs=120)
    assert "ttl" in view["freshness"]["reason"]
    assert view["freshness"]["materialized_until"] is not None
    items = by_name(cat["views"])["item_stats"]["freshness"]
    assert items["stale"] is True and items["reason"].startswith("never materialised")
    assert set(cat["stale_views"]) == {"user_behavior", "item_stats"}
    assert by_name(cat["views"])["user_profile"]["freshness"]["stale"] is False
    assert page.status_code == 200
    banner = page.text.split('id="stale-views"')[1].split("</div>")[0]
    assert "user_behavior" in banner and "item_stats" in banner and "user_profile" not in banner
    assert detail.status_code == 200 and "stale" in detail.text


def test_an_unknown_view_is_404_naming_the_field(client: TestClient) -> None:
    answer = client.get("/api/v1/features/views/no_such_view")
    assert answer.status_code == 404
    body = answer.json()
    assert body["field"] == "view"
    assert body["error"].startswith("view: unknown 'no_such_view'")
    assert "user_behavior" in body["error"]
    page = client.get("/features/views/no_such_view")
    assert page.status_code == 404 and "no_such_view" in page.text


def test_feast_ui_is_linked_where_configured(
    tmp_path: Path, feature_repo_ready: FeatureRepo
) -> None:
    settings = settings_for(tmp_path, feature_repo_ready.path, feast_ui_url="http://127.0.0.1:8888")
    with TestClient(create_app(settings)) as client:
        view = client.get("/api/v1/features/views/item_stats").json()
        page = client.get("/features").text
    assert view["feast_ui_url"] == "http://127.0.0.1:8888/p/scoring/feature-view/item_stats"
    assert "http://127.0.0.1:8888/p/scoring/lineage/" in page


@pytest.fixture
def redis_repo(tmp_path: Path, feature_repo_ready: FeatureRepo) -> Iterator[tuple[Path, Path]]:
    """The repo (definitions and data) on a Redis online store under a project of its own,
    applied, nothing materialised; the project's keys deleted after."""
    require(_reachable("127.0.0.1", 6379), "Redis on 127.0.0.1:6379")
    repo = tmp_path / "features"
    shutil.copytree(
        feature_repo_ready.path,
        repo,
        ignore=shutil.ignore_patterns("__pycache__", "served", "registry.db", "online_store.db"),
    )
    fs_yaml = repo / "feature_store.redis.yaml"
    fs_yaml.write_text(
        f"project: console_test_{uuid.uuid4().hex[:10]}\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        f"online_store:\n  type: redis\n  connection_string: {REDIS}\n"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
        "auth:\n  type: no_auth\n"
    )
    feature_repo.apply(repo, fs_yaml)
    yield repo, fs_yaml
    feature_repo.drop_project(feature_repo.open_store(repo, fs_yaml))


@pytest.mark.redis
def test_redis_freshness_from_a_sample_of_keys(
    tmp_path: Path, redis_repo: tuple[Path, Path]
) -> None:
    repo, fs_yaml = redis_repo
    store = feature_repo.open_store(repo, fs_yaml)
    now = datetime.now(UTC).replace(microsecond=0)
    old, fresh = now - timedelta(days=5), now - timedelta(hours=1)
    store.write_to_online_store("user_behavior", old_rows(store, "user_behavior", old))
    items = old_rows(store, "item_stats", fresh)
    # The newest row of a view is its newest row anywhere, not its entities' common time.
    items.loc[items.index[0], "event_timestamp"] = now - timedelta(minutes=10)
    store.write_to_online_store("item_stats", items)

    views = [store.get_feature_view(n) for n in ("user_behavior", "item_stats", "user_profile")]
    rows = RedisFreshness(store).newest_rows(views)
    assert rows["user_behavior"].newest == old and not rows["user_behavior"].sampled
    assert rows["item_stats"].newest == now - timedelta(minutes=10)
    assert rows["item_stats"].entities == len(items)
    assert rows["user_profile"].newest is None and rows["user_profile"].entities == 0
    sample = RedisFreshness(store, sample=3).newest_rows(views)["user_behavior"]
    assert sample.sampled and sample.keys_read == 3 and sample.entities == 3

    with TestClient(create_app(settings_for(tmp_path, repo, fs_yaml))) as client:
        cat = strict_json(client.get("/api/v1/features").text)
        page = client.get("/features").text
    got = by_name(cat["views"])
    assert cat["online_store"] == "redis"
    assert got["user_behavior"]["freshness"]["store"] == "redis"
    assert got["user_behavior"]["freshness"]["stale"] is True
    assert got["item_stats"]["freshness"]["stale"] is False
    assert got["user_profile"]["freshness"]["reason"].startswith("never materialised")
    assert "sample of at most 2,000 keys" in page
