"""A gateway's heartbeat: what it serves, where it answers and where its metrics are scraped."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import UTC, datetime
from typing import Any

from scoring.core.settings import GatewaySettings, Settings
from scoring.gateway.routing import ModelRouter
from scoring.gateway.server import advertised


class Beats:
    """A RoutingSource that keeps the heartbeats it is sent."""

    def __init__(self) -> None:
        self.beats: list[tuple[str, int, dict[str, Any] | None]] = []

    def heartbeat(self, instance_id: str, revision: int, detail: dict[str, Any] | None) -> None:
        self.beats.append((instance_id, revision, detail))


def test_the_gateway_advertises_its_address_and_metrics_url() -> None:
    here = advertised(Settings(gateway=GatewaySettings(host="127.0.0.1", metrics_port=9464)), 5051)
    assert here["address"] == "127.0.0.1:5051"
    assert here["metrics_url"] == "http://127.0.0.1:9464/metrics"
    assert here["pid"] == os.getpid()
    started = datetime.fromisoformat(str(here["started_at"]))
    assert started.tzinfo is not None and started <= datetime.now(UTC)


def test_a_wildcard_host_is_advertised_by_name_and_metrics_off_as_none() -> None:
    name = socket.gethostname()
    for host in ("0.0.0.0", "::"):
        there = advertised(Settings(gateway=GatewaySettings(host=host, metrics_port=0)), 50051)
        assert there["address"] == f"{name}:50051"
        assert there["metrics_url"] is None
    ipv6 = advertised(Settings(gateway=GatewaySettings(host="::1", metrics_port=9)), 7)
    assert ipv6["address"] == "[::1]:7" and ipv6["metrics_url"] == "http://[::1]:9/metrics"


def test_the_heartbeat_detail_holds_what_is_served_and_what_is_advertised() -> None:
    beats = Beats()
    router = ModelRouter([], None, None, beats, "gw-1")  # type: ignore[arg-type]
    router.advertised = {"address": "h:1", "metrics_url": "http://h:2/metrics"}
    router.applied_revision = 7
    asyncio.run(router._heartbeat())
    assert beats.beats == [
        ("gw-1", 7, {"serving": {}, "address": "h:1", "metrics_url": "http://h:2/metrics"})
    ]
