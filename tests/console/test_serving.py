"""The Serving page: rates and percentiles from two scrapes of a real gateway metrics endpoint,
the page and its JSON on a real registry with heartbeats, and a real gateway's advertised
metrics read by the console."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest, start_http_server
from sqlalchemy import update
from starlette.testclient import TestClient

from scoring.console import create_app
from scoring.console.sampler import (
    Sampler,
    ScrapeError,
    deltas,
    increase,
    parse,
    quantile,
    scrape,
    window,
)
from scoring.console.serving import metric_figures, served_versions
from scoring.core.settings import ConsoleSettings, RegistrySettings, Settings, TritonSettings
from scoring.gateway.breaker import Breakers
from scoring.gateway.prometheus import GatewayMetrics
from scoring.gateway.redis_source import RowCache
from scoring.registry import Registry, Stage, make_engine
from scoring.registry.models import ServingInstance

from ..conftest import free_port


class Endpoint:
    """A gateway's real metrics (GatewayMetrics) on its real HTTP endpoint on 127.0.0.1."""

    def __init__(self) -> None:
        self.metrics = GatewayMetrics()
        self.breakers = Breakers(3)
        self.cache = RowCache(100, 60.0)
        self.metrics.track_breakers(self.breakers)
        self.metrics.track_cache(self.cache)
        port = free_port()
        self.server, _ = start_http_server(port, addr="127.0.0.1", registry=self.metrics.registry)
        self.url = f"http://127.0.0.1:{port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    served = Endpoint()
    try:
        yield served
    finally:
        served.close()


def row(rows: list[Any], **match: Any) -> Any:
    found = [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def test_quantile_interpolates_inside_the_bucket_as_prometheus_does() -> None:
    # 100 observations in (0.003, 0.005], one in (0.15, 0.25]: cumulative buckets.
    buckets = {0.003: 0.0, 0.005: 100.0, 0.15: 100.0, 0.25: 101.0, math.inf: 101.0}
    assert quantile(0.5, buckets) == pytest.approx(0.003 + 0.002 * 50.5 / 100)
    assert quantile(0.999, buckets) == pytest.approx(0.15 + 0.1 * (0.999 * 101 - 100))
    # In the +Inf bucket: the highest finite bound. Nothing observed: no value.
    assert quantile(0.99, {0.1: 0.0, 1.0: 1.0, math.inf: 5.0}) == 1.0
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.5, {}) is None


def test_a_counter_that_went_down_was_reset() -> None:
    assert increase(10.0, 14.0) == 4.0
    assert increase(10.0, 3.0) == 3.0  # the gateway restarted: 3 since then
    before = GatewayMetrics()
    before.requests.labels("Rank", "OK").inc(10)
    after = GatewayMetrics()  # a restarted gateway
    after.requests.labels("Rank", "OK").inc(3)
    old = parse("u", generate_latest(before.registry).decode(), at=1.0)
    new = parse("u", generate_latest(after.registry).decode(), at=2.0)
    assert deltas(old, new, "scoring_requests_total", ["method"]) == {("Rank",): 3.0}


def test_rates_and_percentiles_between_two_scrapes(endpoint: Endpoint) -> None:
    m = endpoint.metrics
    # Before the first scrape: outside the window, inside the totals.
    m.requests.labels("Rank", "OK").inc(5)
    for _ in range(50):
        m.stage_latency.labels("total", "item_ranker").observe(1.0)
    m.degraded.labels("features").inc(2)
    endpoint.cache.get_many([("item", "i_1")] * 4, time.time())  # 4 misses
    sampler = Sampler(lambda: [endpoint.url], interval_s=3600.0)
    sampler.sample_once()

    first = metric_figures(sampler.endpoints())
    assert first["window"].kind == "cumulative" and first["window"].seconds is None
    assert row(first["requests"], method="Rank", code="OK").count == 5
    assert row(first["requests"], method="Rank", code="OK").per_s is None
    assert first["request_rate_per_s"] is None
    # 50 observations in (0.5, 1.0]: the median halfway through the bucket.
    assert row(first["latency"], stage="total", target="*").p50_ms == pytest.approx(750.0)

    # Known traffic between the two scrapes.
    m.requests.labels("Rank", "OK").inc(30)
    m.requests.labels("Rank", "INVALID_ARGUMENT").inc(3)
    m.requests.labels("Feedback", "OK").inc(6)
    for _ in range(100):
        m.stage_latency.labels("total", "item_ranker").observe(0.004)
    m.stage_latency.labels("total", "activity_ranker").observe(0.2)
    for _ in range(10):
        m.stage_latency.labels("features", "item_ranker").observe(0.0015)
    m.degraded.labels("features").inc()
    m.degraded.labels("model").inc(4)
    now = time.time()
    endpoint.cache.put(("item", "i_1"), now, [1.0], now)
    endpoint.cache.get_many([("item", "i_1")] * 3 + [("item", "i_2")], now)  # 3 hits, 1 miss
    endpoint.breakers.trip_all(["item_ranker"], "test")
    time.sleep(0.2)
    sampler.sample_once()

    figures = metric_figures(sampler.endpoints())
    w = figures["window"]
    assert w.kind == "window" and w.gateways == 1
    old, new = window(sampler.endpoints()[0].ring)
    assert old is not None and w.seconds == pytest.approx(new.at - old.at) and w.seconds > 0
    rank_ok = row(figures["requests"], method="Rank", code="OK")
    assert rank_ok.count == 30 and rank_ok.per_s == pytest.approx(30 / w.seconds)
    assert figures["request_rate_per_s"] == pytest.approx(39 / w.seconds)
    errors = {c.key: (c.count, c.total) for c in figures["errors"]}
    assert errors == {"INVALID_ARGUMENT": (3, 3)}
    degraded = {c.key: (c.count, c.total) for c in figures["degraded"]}
    assert degraded == {"features": (1, 3), "model": (4, 4)}

    total = row(figures["latency"], stage="total", target="*")
    assert total.count == 101  # the 50 slow ones before the window are not in it
    assert total.p50_ms == pytest.approx((0.003 + 0.002 * 50.5 / 100) * 1000)
    assert total.p99_ms == pytest.approx((0.003 + 0.002 * (0.99 * 101) / 100) * 1000)
    activity = row(figures["latency"], stage="total", target="activity_ranker")
    assert activity.count == 1 and activity.p50_ms == pytest.approx(200.0)
    features = row(figures["latency"], stage="features", target="*")
    assert features.p50_ms == pytest.approx((0.001 + 0.001 * 5 / 10) * 1000)
    # Stages in request order, "features" before "total".
    assert [r.stage for r in figures["latency"] if r.target == "*"] == ["features", "total"]

    assert figures["breakers_open"] == ["item_ranker"]
    assert figures["feature_cache_hit_rate"] == pytest.approx(0.75)
    assert figures["feature_cache_lookups"] == 4
    (rates,) = figures["rate_series"]
    assert rates.points == [(new.at, pytest.approx(39 / w.seconds))]
    (p99,) = figures["p99_series"]
    assert p99.points[0][1] == pytest.approx(total.p99_ms)


def test_a_failing_endpoint_is_reported_and_left_out_of_the_rates(endpoint: Endpoint) -> None:
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(ScrapeError, match="not reachable"):
        scrape(dead, timeout_s=1.0)
    with pytest.raises(ScrapeError, match="not an http"):
        scrape("file:///etc/passwd")
    endpoint.metrics.requests.labels("Rank", "OK").inc(2)
    sampler = Sampler(lambda: [endpoint.url, dead], interval_s=3600.0, timeout_s=1.0)
    sampler.sample_once()
    states = {e.url: e for e in sampler.endpoints()}
    assert states[dead].error is not None and states[dead].ring == ()
    assert states[endpoint.url].error is None and len(states[endpoint.url].ring) == 1
    figures = metric_figures(sampler.endpoints())
    assert figures["window"].gateways == 1
    assert row(figures["requests"], method="Rank", code="OK").count == 2


def test_served_versions_reads_both_heartbeat_shapes() -> None:
    now = served_versions({"serving": {"item_ranker": ["3", "4", ""]}, "pid": 1})
    assert now["item_ranker"].model_dump() == {"production": "3", "canary": "4", "shadow": None}
    earlier = served_versions({"item_ranker": ["3", "", "5"]})
    assert earlier["item_ranker"].model_dump() == {
        "production": "3",
        "canary": None,
        "shadow": "5",
    }
    assert served_versions(None) == {}


def wait_until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def register(registry: Registry, target: str, version: int) -> None:
    registry.register(
        target,
        version,
        artifact_path=f"{target}/{version}",
        checksum=f"{version:064x}",
        feature_service=f"{target}_v1",
        schema_hash="abc",
        train_start=None,
        train_end=None,
        metrics={"auc": 0.8},
        manifest={},
        actor="test",
    )


def test_page_and_json_on_a_registry_with_heartbeats(tmp_path: Path, endpoint: Endpoint) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Registry(url) as registry:
        register(registry, "item_ranker", 1)
        register(registry, "item_ranker", 2)
        registry.set_stage("item_ranker", 1, Stage.PRODUCTION, actor="test")
        revision = registry.revision()
        registry.heartbeat(
            "gw-live",
            revision,
            {
                "serving": {"item_ranker": ["1", "", ""]},
                "metrics_url": endpoint.url,
                "address": "127.0.0.1:50051",
                "pid": 4242,
                "started_at": "2026-01-01T00:00:00+00:00",
            },
        )
        # A gateway of an earlier release (the old detail), silent for an hour and behind.
        registry.heartbeat("gw-old", revision - 1, {"item_ranker": ["1", "2", ""]})
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            update(ServingInstance)
            .where(ServingInstance.instance_id == "gw-old")
            .values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1))
        )
    engine.dispose()
    endpoint.metrics.requests.labels("Rank", "OK").inc(5)
    settings = Settings(
        registry=RegistrySettings(url=url),
        triton=TritonSettings(url=f"127.0.0.1:{free_port()}"),  # nothing listens: unreachable
        console=ConsoleSettings(scrape_interval_s=3600.0),
    )
    with TestClient(create_app(settings)) as client:
        sampler = client.app.state.ctx.extras["serving"]  # type: ignore[attr-defined]
        # The sampler's first round (at start) found the live gateway's advertised URL.
        wait_until(lambda: any(e.ring for e in sampler.endpoints()))

        first = client.get("/api/v1/serving")
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["metrics_source"] == "heartbeats"
        assert [e["url"] for e in body["endpoints"]] == [endpoint.url]
        assert body["window"] == {"kind": "cumulative", "seconds": None, "gateways": 1}
        assert body["requests"] == [{"method": "Rank", "code": "OK", "count": 5, "per_s": None}]

        endpoint.metrics.requests.labels("Rank", "OK").inc(20)
        endpoint.metrics.requests.labels("Rank", "UNAVAILABLE").inc(2)
        time.sleep(0.1)
        sampler.sample_once()
        response = client.get("/api/v1/serving")
        assert response.status_code == 200
        assert "NaN" not in response.text and "Infinity" not in response.text
        json.loads(response.text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
        body = response.json()
        seconds = body["window"]["seconds"]
        assert body["window"]["kind"] == "window" and seconds > 0
        ok = next(r for r in body["requests"] if r["code"] == "OK")
        assert ok["count"] == 20 and ok["per_s"] == pytest.approx(20 / seconds)
        assert body["errors"] == [{"key": "UNAVAILABLE", "count": 2, "total": 2}]

        gateways = {g["instance_id"]: g for g in body["gateways"]}
        live, old = gateways["gw-live"], gateways["gw-old"]
        assert body["registry_revision"] == revision
        assert live["live"] and not live["behind"] and live["revision"] == revision
        assert live["address"] == "127.0.0.1:50051" and live["metrics_url"] == endpoint.url
        assert live["pid"] == 4242
        assert live["serving"] == {
            "item_ranker": {"production": "1", "canary": None, "shadow": None}
        }
        assert not old["live"] and old["behind"] and old["age_s"] > 3000
        assert old["serving"]["item_ranker"]["canary"] == "2"
        assert old["metrics_url"] is None

        triton = body["triton"]
        assert not triton["reachable"] and not triton["ready"] and triton["error"]
        assert triton["models"] == []

        page = client.get("/serving")
        assert page.status_code == 200
        html = page.text
        assert '<meta http-equiv="refresh"' in html
        assert 'aria-current="page"' in html and 'href="/serving"' in html
        for text in ("gw-live", "gw-old", "silent", "behind", "unreachable", "UNAVAILABLE"):
            assert text in html, text
        assert html.count('class="chart"') == 2
        assert "canary v2" in html


def test_configured_urls_replace_the_heartbeats(tmp_path: Path, endpoint: Endpoint) -> None:
    settings = Settings(
        registry=RegistrySettings(url=f"sqlite:///{tmp_path / 'r.db'}"),
        triton=TritonSettings(url=f"127.0.0.1:{free_port()}"),
        console=ConsoleSettings(scrape_interval_s=3600.0, metrics_urls=(endpoint.url,)),
    )
    with TestClient(create_app(settings)) as client:
        sampler = client.app.state.ctx.extras["serving"]  # type: ignore[attr-defined]
        wait_until(lambda: any(e.ring for e in sampler.endpoints()))
        body = client.get("/api/v1/serving").json()
        assert body["metrics_source"] == "settings"
        assert [e["ok"] for e in body["endpoints"]] == [True]
        assert body["gateways"] == [] and body["registry_revision"] == 0
        page = client.get("/serving")
        assert page.status_code == 200 and "no gateway has reported" in page.text
    assert "serving" not in client.app.state.ctx.extras  # type: ignore[attr-defined]


@pytest.mark.e2e
@pytest.mark.triton
def test_a_real_gateway_advertises_metrics_the_console_reads(gateway: Any) -> None:
    from scoring.client import RankingClient
    from scoring.core.targets import TARGETS

    settings = gateway.settings.model_copy(
        update={"console": gateway.settings.console.model_copy(update={"scrape_interval_s": 3600})}
    )
    gw = settings.gateway
    with Registry(settings.registry.url) as registry:
        wait_until(lambda: bool(registry.instances(settings.registry.heartbeat_max_age_s)))
        (instance,) = [
            i
            for i in registry.instances(settings.registry.heartbeat_max_age_s)
            if f"-{gateway.process.pid}-" in i.instance_id
        ]
    detail = instance.detail or {}
    assert detail["metrics_url"] == f"http://{gw.host}:{gw.metrics_port}/metrics"
    assert detail["address"] == f"{gw.host}:{gw.port}"
    assert detail["pid"] == gateway.process.pid
    assert datetime.fromisoformat(detail["started_at"]) <= datetime.now(UTC)
    assert "item_ranker" in detail["serving"]

    with TestClient(create_app(settings)) as client:
        sampler = client.app.state.ctx.extras["serving"]  # type: ignore[attr-defined]
        wait_until(lambda: any(e.ring for e in sampler.endpoints()))
        with RankingClient(gateway.address) as ranking:
            for user in ("u_000001", "u_000002", "u_000003"):
                ranking.rank(user, [f"i_{i:06d}" for i in range(10)])
        time.sleep(0.1)
        sampler.sample_once()
        body = client.get("/api/v1/serving").json()
    assert [e["url"] for e in body["endpoints"]] == [detail["metrics_url"]]
    assert body["window"]["kind"] == "window"
    rank = next(r for r in body["requests"] if r["method"] == "Rank" and r["code"] == "OK")
    assert rank["count"] >= 3 and rank["per_s"] > 0
    total = next(r for r in body["latency"] if r["stage"] == "total" and r["target"] == "*")
    assert total["count"] >= 3 and total["p99_ms"] > 0
    assert body["triton"]["reachable"] and body["triton"]["ready"]
    ready = {m["name"] for m in body["triton"]["models"] if m["state"] == "READY"}
    assert set(TARGETS) <= ready
    (row_,) = [g for g in body["gateways"] if g["instance_id"] == instance.instance_id]
    assert row_["live"] and row_["metrics_url"] == detail["metrics_url"]
    assert row_["behind"] == (row_["revision"] < body["registry_revision"])
