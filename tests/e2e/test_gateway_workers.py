"""Two gateway workers on one port (GatewaySettings.workers = 2), real processes end to end.

One parent, two workers bound to the same gRPC port with SO_REUSEPORT: requests over several
connections are answered by both; each worker heartbeats under its own instance id and serves
its own metrics port (advertised in its heartbeat, where the console's Serving page finds
every worker); a promotion confirms only once both
applied it (a frozen worker holds it up); the served-event and served-feature logs hold every
request exactly once across the workers; SIGTERM to the parent drains both, which exit 0.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any, cast

import grpc
import pyarrow.dataset as ds
import pytest

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.console.context import ConsoleContext
from scoring.console.serving import latest
from scoring.core.contract import contract_from_store
from scoring.core.served_events import read_events
from scoring.core.targets import TARGETS
from scoring.devtools.local_stack import free_ports
from scoring.gateway.process import GatewayProcess
from scoring.registry import Registry
from scoring.registry.promotion import Promoter, register_version
from scoring.trainer.export import read_manifest

from ..conftest import FeatureRepo, freeze_between_writes, gateway_settings
from .test_promotion import ITEMS, TARGET, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.triton]
CONNECTIONS = 16  # the kernel picks a worker per connection: 2**-15 that one gets them all
REQUESTS = 64


def test_two_workers_share_the_port_heartbeat_log_and_drain(
    tmp_path: Path, feature_repo_ready: FeatureRepo, triton: Any
) -> None:
    database = tmp_path / "registry.db"
    url = f"sqlite:///{database}"
    settings = gateway_settings(
        feature_repo_ready.path,
        triton.settings,
        registry_url=url,
        workers=2,
        metrics_port=free_ports(2),
        feature_timeout_ms=2000,
    )
    settings.registry.ack_timeout_s = 3.0
    registry = Registry(url)
    for name in TARGETS:
        models = triton.settings.model_repository
        register_version(registry, models, name, 1, read_manifest(models / name, 1), "test")
    store = feature_repo_ready.store()
    promoter = Promoter(
        settings,
        registry,
        lambda service: contract_from_store(store, service).schema_hash,
        actor="mlops-test",
    )
    gateway = GatewayProcess(settings, log_path=tmp_path / "gateway.log")
    with gateway:
        assert gateway.process is not None
        parent = gateway.process.pid

        def workers() -> dict[int, Any]:
            """The live heartbeats of this parent's workers, by worker index."""
            out = {}
            for i in registry.instances(settings.registry.heartbeat_max_age_s):
                detail = i.detail or {}
                if detail.get("pid") != parent and isinstance(detail.get("worker"), int):
                    out[detail["worker"]] = i
            return out

        wait_until(lambda: len(workers()) == 2, 60.0)
        beats = workers()
        ids = {w: i.instance_id for w, i in beats.items()}
        pids = {w: int(i.detail["pid"]) for w, i in beats.items()}
        assert len(set(pids.values())) == 2 and parent not in pids.values()
        assert {i.detail["address"] for i in beats.values()} == {gateway.address}
        metrics = {w: i.detail["metrics_url"] for w, i in beats.items()}
        assert metrics == {
            w: f"http://127.0.0.1:{settings.gateway.metrics_port + w}/metrics" for w in (0, 1)
        }

        # Requests over separate connections (a channel of its own each, no shared subchannel).
        channels = [
            grpc.insecure_channel(gateway.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CONNECTIONS)
        ]
        sent = [f"workers-{n:04d}" for n in range(REQUESTS)]
        try:
            stubs = [pb_grpc.RankingServiceStub(c) for c in channels]
            for n, request_id in enumerate(sent):
                request = pb.RankRequest(
                    request_id=request_id,
                    user_id=f"u_{n % 50:06d}",
                    candidates=[pb.Candidate(id=c, type=pb.CANDIDATE_TYPE_ITEM) for c in ITEMS],
                    keep_unavailable=True,  # every candidate answered (and logged)
                )
                answer = stubs[n % CONNECTIONS].Rank(request, timeout=10)
                assert answer.request_id == request_id and len(answer.candidates) == len(ITEMS)
        finally:
            for channel in channels:
                channel.close()
        # What the console's Serving page reads: every worker's metrics, found by heartbeat.
        console = ConsoleContext(settings, registry, cast(Any, None), cast(Any, None))
        scrapes = {scrape.url: scrape for scrape in latest(console)}
        assert set(scrapes) == set(metrics.values())
        answered = {
            w: scrapes[u].by("scoring_requests_total", ["code"], method="Rank").get(("OK",), 0.0)
            for w, u in metrics.items()
        }
        assert sum(answered.values()) == REQUESTS, answered
        assert all(count > 0 for count in answered.values()), answered

        # A promotion: every worker counts, and a frozen one holds the confirmation up.
        expected = promoter.live_gateways()
        assert set(ids.values()) <= expected
        freeze_between_writes(pids[1], database)
        try:
            events = promoter.promote(TARGET, 1, force=True, reason="test: workers")
            revision = events[-1].id
            assert not promoter.wait_for_gateways(revision, expected)
            assert [ids[1] in u for u in promoter.unconfirmed] == [True], promoter.unconfirmed
        finally:
            os.kill(pids[1], signal.SIGCONT)
        assert promoter.wait_for_gateways(revision, expected)

        # SIGTERM to the parent: both workers drain, exit 0, and so does the parent.
        code = gateway.stop()
    assert code == 0, gateway.log_tail()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    log = (tmp_path / "gateway.log").read_text()
    for w in (0, 1):
        assert re.search(rf"gateway_worker_stopped worker={w} pid=\d+ returncode=0", log), log[
            -3000:
        ]

    # Every request once across the workers' event files, and both workers wrote some.
    requests = read_events(settings.gateway.events_dir, "request")
    assert Counter(e["request_id"] for e in requests) == Counter(sent)
    files = list((settings.gateway.events_dir / "request").glob("*/*.jsonl"))
    assert {f.stem for f in files} == set(ids.values())
    # The served-feature log: every request's candidate rows, once.
    rows = ds.dataset(settings.gateway.feature_log_dir, format="parquet", partitioning="hive")
    served = Counter(rows.to_table(columns=["request_id"]).column("request_id").to_pylist())
    assert served == Counter({r: len(ITEMS) for r in sent})
