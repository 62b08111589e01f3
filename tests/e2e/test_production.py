"""The production profile end to end: Redis online store, SQL registry on PostgreSQL, Triton,
and the gateway's direct Redis read: parity, a bounded load with zero failures, a paused store."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scoring.client import RankingClient
from scoring.core import feature_repo
from scoring.core.settings import FeastSettings, GatewaySettings, RegistrySettings, Settings
from scoring.core.targets import TARGETS, CandidateKind
from scoring.datagen.dataset import build_data_set
from scoring.gateway.process import GatewayProcess
from scoring.registry import Registry, Stage
from scoring.registry.promotion import register_version
from scoring.trainer.export import read_manifest
from scoring.trainer.train import TrainConfig, train_target
from scoring.triton.server import TritonServer

from ..conftest import TEXT_CACHE, free_port, require, triton_installed, triton_settings
from ..features.test_stores import REDIS, tiny
from ..features.test_stores import production_repo as production_repo  # noqa: F401 (fixture)
from ..registry import postgres_database
from .test_rank import direct_outputs

pytestmark = [pytest.mark.e2e, pytest.mark.triton, pytest.mark.redis, pytest.mark.postgres]
NOW = int(time.time())


@dataclass(frozen=True)
class ProdRepo:
    path: Path
    fs_yaml: Path

    def store(self) -> Any:
        return feature_repo.open_store(self.path, self.fs_yaml)


@pytest.fixture
def prod_stack(
    production_repo: tuple[Path, Path, str],  # noqa: F811
    tmp_path: Path,
) -> Iterator[tuple[ProdRepo, Path, GatewayProcess]]:
    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    stack = ExitStack()
    repo, fs_yaml, _ = production_repo
    build_data_set(
        tiny(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)),
        repo / "data",
        text_cache=TEXT_CACHE,
    )
    feature_repo.apply(repo, fs_yaml)
    feature_repo.materialize(repo, fs_yaml=fs_yaml)
    models = tmp_path / "model_repository"
    store = feature_repo.open_store(repo, fs_yaml)
    for target in TARGETS.values():
        train_target(store, target, repo, models, TrainConfig(epochs=1))
    triton_cfg = triton_settings(models, tmp_path / "triton")
    # The model registry on the machine's PostgreSQL, as compose passes it (a fresh database
    # here): the trainer's versions registered and promoted; the gateway routes by it.
    registry_url = stack.enter_context(postgres_database())
    registry = Registry(registry_url)
    for name in TARGETS:
        register_version(registry, models, name, 1, read_manifest(models / name, 1), "test")
        registry.set_stage(name, 1, Stage.PRODUCTION, actor="test", reason="production test")
    registry.close()
    settings = Settings(
        feast=FeastSettings(repo_path=repo, fs_yaml=fs_yaml),
        triton=triton_cfg,
        gateway=GatewaySettings(
            port=free_port(),
            metrics_port=free_port(),
            health_poll_interval_s=0.2,
            feature_log_dir=tmp_path / "served",
            feature_read="redis",
            events_dir=tmp_path / "events",
        ),
        registry=RegistrySettings(url=registry_url),
    )
    env = {k: os.environ[k] for k in ("FEAST_REDIS_CONNECTION", "FEAST_REGISTRY_PATH")}
    assert env, "the production_repo fixture sets the store variables"
    with stack, TritonServer(triton_cfg, list(TARGETS)):
        with GatewayProcess(settings, log_path=tmp_path / "gateway.log") as gateway:
            yield ProdRepo(repo, fs_yaml), models, gateway


def test_production_path(prod_stack: tuple[ProdRepo, Path, GatewayProcess]) -> None:
    repo, models, gateway = prod_stack
    ids = [f"i_{i:06d}" for i in range(25)] + ["sku_unknown"]

    # 1. Parity: the Redis read path scores exactly what TorchScript gives on Feast's features.
    with RankingClient(gateway.address) as client:
        response = client.rank("u_000003", ids, timestamp_s=NOW, keep_unavailable=True)
    expected, _, version = direct_outputs(repo, models, "item_ranker", "u_000003", ids, NOW)
    got = {c.id: c.score for c in response.candidates}
    assert max(abs(got[i] - e) for i, e in zip(ids, expected, strict=True)) <= 1e-5
    assert response.model_version == version and not response.degraded
    assert response.arm == "production"  # routed by the PostgreSQL model registry
    assert {c.id for c in response.candidates if c.unknown} == {"sku_unknown"}

    # 2. A bounded load on loopback: 8 callers x 25 requests of 30 candidates, zero failures.
    failures: list[BaseException] = []
    done = [0]
    lock = threading.Lock()

    def caller(seed: int) -> None:
        with RankingClient(gateway.address) as client:
            for k in range(25):
                start = (seed * 7 + k) % 20
                try:
                    client.rank(
                        f"u_{(seed + k) % 40:06d}",
                        [f"i_{j:06d}" for j in range(start, start + 10)],
                        CandidateKind.ITEM,
                        timeout_s=10,
                    )
                    with lock:
                        done[0] += 1
                except Exception as exc:  # a failed request is what this test counts
                    with lock:
                        failures.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=caller, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started
    assert not failures, failures[:3]
    assert done[0] == 200
    print(f"load: 200 requests in {elapsed:.1f}s ({200 / elapsed:.0f} req/s), 0 failures")

    # 3. A paused Redis (a stuck store): defaults within the deadline, flagged, still scored.
    import redis

    admin = redis.Redis.from_url("redis://" + REDIS)
    admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
    try:
        with RankingClient(gateway.address) as client:  # over 2 s: DEADLINE_EXCEEDED raises
            paused = client.rank("u_000005", ids[:10], timestamp_s=NOW, timeout_s=2.0)
    finally:
        admin.close()
    assert paused.degraded and paused.unknown_user and paused.model_version
    assert any(d.startswith("features_timeout") for d in paused.degradations)
    # The pause ends (Redis's clock, 1.5 s after it began); the store answers again.
    deadline = time.monotonic() + 30
    with RankingClient(gateway.address) as client:
        while client.rank("u_000005", ids[:10], timestamp_s=NOW).degraded:
            assert time.monotonic() < deadline, "still degraded 30 s after Redis's pause"
            time.sleep(0.1)
