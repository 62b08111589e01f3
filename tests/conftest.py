"""Shared fixtures: a feature repo with data, trained models, a real Triton and a real gateway.

Servers bind 127.0.0.1 on free ports, are polled for readiness and stopped by PID. A test that
needs a service it cannot get is skipped locally and fails when CI=true.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scoring.core import feature_repo
from scoring.core.settings import FeastSettings, Settings, TritonSettings
from scoring.core.targets import TARGETS
from scoring.datagen.dataset import DataSet, build_data_set
from scoring.datagen.events import EventLog
from scoring.datagen.synthetic import SyntheticConfig, generate
from scoring.devtools import local_stack
from scoring.devtools.local_stack import free_port as free_port
from scoring.devtools.local_stack import triton_settings as triton_settings

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
# Sentence-model encodings of item texts, shared by test runs (the model loads only for new texts).
TEXT_CACHE = ROOT / ".pytest_cache" / "scoring" / "text_cache.parquet"


def require(condition: bool, reason: str) -> None:
    """Skips locally, fails in CI: a missing service must never pass silently there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


def freeze_between_writes(pid: int, database: Path) -> None:
    """SIGSTOP a gateway at a moment it holds no write lock on a SQLite registry file.

    SQLite has one writer per file: a SIGSTOP that lands inside the gateway's heartbeat write
    (a few milliseconds each round) keeps every other writer, the promoter included, out until
    SIGCONT. That is a property of the embedded registry (replicas in production share
    PostgreSQL, where a heartbeat locks only its own row), not what the tests that freeze a
    replica are about. So the freeze is checked by taking the write lock once, and retried
    after a short resume when the gateway held it."""
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        probe = sqlite3.connect(database, timeout=0.5, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        finally:
            probe.close()
        os.kill(pid, signal.SIGCONT)
        time.sleep(random.uniform(0.005, 0.05))  # jitter: no lock-step with its writes
    raise AssertionError(f"process {pid} held the write lock of {database} at every attempt")


def copy_feature_repo(dest: Path) -> Path:
    """A private copy of features/ (definitions only) so tests never touch the working tree."""
    shutil.copytree(ROOT / "features", dest, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return dest


SMALL = SyntheticConfig(
    n_users=200,
    n_items=150,
    n_activities=30,
    n_item_impressions=8000,
    n_activity_impressions=4000,
)


@dataclass(frozen=True)
class FeatureRepo:
    path: Path
    data: DataSet
    log: EventLog

    def store(self) -> Any:
        return feature_repo.open_store(self.path)


@pytest.fixture(scope="session")
def feature_repo_ready(tmp_path_factory: pytest.TempPathFactory) -> FeatureRepo:
    """features/ copied, small synthetic data generated, applied and materialized."""
    path = copy_feature_repo(tmp_path_factory.mktemp("repo") / "features")
    log = generate(SMALL)
    data = build_data_set(log, path / "data", text_cache=TEXT_CACHE)
    feature_repo.apply(path)
    feature_repo.materialize(path)
    return FeatureRepo(path, data, log)


@pytest.fixture(scope="session")
def model_repository(
    tmp_path_factory: pytest.TempPathFactory, feature_repo_ready: FeatureRepo
) -> Path:
    """Both targets trained (a few epochs) into a private model repository."""
    from scoring.trainer.train import TrainConfig, train_target

    repo = tmp_path_factory.mktemp("models") / "model_repository"
    store = feature_repo_ready.store()
    for target in TARGETS.values():
        train_target(store, target, feature_repo_ready.path, repo, TrainConfig(epochs=6))
    return repo


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark session (local[2], loopback, no UI) for every Spark test: the JVM
    starts once (about 10 s). Missing pyspark or Java: a skip locally, a failure in CI."""
    from scoring.core.settings import SparkSettings
    from scoring.core.spark import SparkUnavailableError, java_home, spark_session

    require(java_home() is not None, "Java (the Spark tests run PySpark in local mode)")
    settings = SparkSettings(local_dir=tmp_path_factory.mktemp("spark-local"))
    try:
        session = spark_session(settings)
    except SparkUnavailableError as exc:
        require(False, str(exc))
        raise
    yield session
    session.stop()


def triton_installed() -> bool:
    from scoring.triton.server import TritonInstall, TritonStartError

    try:
        return TritonInstall.locate().binary.exists()
    except TritonStartError:
        return False


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Iterator[Any]:
    """A real Triton server (CPU, python backend) serving both targets."""
    from scoring.triton.server import TritonServer

    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    work = tmp_path_factory.mktemp("triton")
    server = TritonServer(triton_settings(model_repository, work), list(TARGETS))
    with server:
        yield server


def gateway_settings(
    repo: Path, triton: TritonSettings, registry_url: str | None = None, **gateway: Any
) -> Settings:
    """Gateway settings on free ports; its served-feature log, experiment events and (unless
    given) a model registry of its own go beside the feature repo. Health is polled often."""
    run = repo.parent / f"gateway-{free_port()}"
    gateway = {"health_poll_interval_s": 0.2, **gateway}
    return local_stack.gateway_settings(
        FeastSettings(repo_path=repo), triton, run, registry_url, **gateway
    )


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, feature_repo_ready: FeatureRepo, triton: Any
) -> Iterator[Any]:
    """The real gateway process, SERVING, wired to the Triton and feature repo above."""
    from scoring.gateway.process import GatewayProcess

    # Small limits, so that tests reach them cheaply (the defaults: 1,000 and 10,000).
    settings = gateway_settings(
        feature_repo_ready.path, triton.settings, max_candidates=100, max_batch_candidates=2_000
    )
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with GatewayProcess(settings, log_path=log) as process:
        yield process


def private_stack(tmp_path: Path, repo: FeatureRepo, model_repository: Path) -> Settings:
    """A private copy of the session's feature repo (data included) and model repository, with
    settings for a Triton and gateway of their own; applied and materialised. For tests that
    change features or models (the session's copies stay untouched)."""
    from scoring import workflows

    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    features = tmp_path / "features"
    shutil.copytree(
        repo.path,
        features,
        ignore=shutil.ignore_patterns("__pycache__", "registry.db", "online_store.db", "served"),
    )
    models = tmp_path / "model_repository"
    shutil.copytree(model_repository, models)
    settings = gateway_settings(features, triton_settings(models, tmp_path / "triton"))
    workflows.apply_features(settings)
    workflows.materialize_features(settings)
    return settings
