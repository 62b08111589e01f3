"""A private production-profile stack to inject faults into: a Redis and a PostgreSQL server of
its own (stopped and restarted at will, never the machine's shared ones), the feature repo on
them (Feast Redis online store and SQL registry), the model registry on PostgreSQL, Triton and
the gateway, each on a free 127.0.0.1 port and stopped by its own PID.

The served-feature log lies on a tmpfs of its own when this process may mount one (root), so a
full disk can be made real (ENOSPC); `feature_log_on_tmpfs` says whether it does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scoring.core.process import ProcessStartError
from scoring.core.settings import FeastSettings, Settings
from scoring.core.targets import TARGETS
from scoring.devtools.local_stack import free_port, gateway_settings, triton_settings
from scoring.devtools.redis_server import RedisServer
from scoring.devtools.soak import scrape_metrics
from scoring.gateway.process import GatewayProcess, health_status

Say = Callable[[str], None]
FAULT_TARGET = "item_ranker"  # the target whose model the faults break
FEATURE_LOG_TMPFS_SIZE = "256m"


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl), or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    local = Path("/usr/local/bin")
    return local if (local / "initdb").exists() else None


class AnsweringGateway(GatewayProcess):
    """A gateway waited on only until its health service answers at all (SERVING or not)."""

    def _readiness(self) -> contextlib.AbstractContextManager[Callable[[], bool]]:
        return contextlib.nullcontext(
            lambda: health_status(self.address, tls=self.settings.tls) is not None
        )


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb into a temporary folder, trust auth, no fsync:
    a throwaway), run with pg_ctl on a free 127.0.0.1 port; as the `postgres` user when this
    process is root (the server refuses to run as root)."""

    def __init__(self, port: int | None = None) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise ProcessStartError("PostgreSQL server programs (initdb, pg_ctl) not found")
        self.bin = bin_dir
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="scoring-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as, str(self.bin / program), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise ProcessStartError(f"{program} failed: {done.stderr.strip() or done.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  options, "start")  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown (clients disconnected, as an operator's restart does)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Creates database `name`; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessStartError, subprocess.TimeoutExpired):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mounts a tmpfs of `size` on `path` (made if missing); False when this process may not."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
    if os.path.ismount(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def production_fs_yaml(repo: Path, redis_address: str, registry_url: str) -> Path:
    """The production profile's feature_store yaml with this stack's stores written in (no
    environment variables needed by any process)."""
    path = repo / "feature_store.production.yaml"
    text = path.read_text()
    for variable, value in (
        ("${FEAST_REDIS_CONNECTION}", redis_address),
        ("${FEAST_REGISTRY_PATH}", registry_url),
    ):
        if variable not in text:
            raise ValueError(f"{path}: {variable} not found")
        text = text.replace(variable, value)
    path.write_text(text)
    return path


class FaultStack:
    """The servers of one fault run, built by `build`; `close` stops everything it started.

    Attributes:
        settings: the gateway's settings (production profile) on this stack's servers.
        users, items: ids the data set holds, for the load.
    """

    def __init__(self, work: Path, say: Say | None = None) -> None:
        self.work = work
        self.say: Say = say or (lambda message: None)
        self.redis = RedisServer(work / "redis")
        self.postgres: PostgresServer | None = None
        self.triton: Any = None  # TritonServer, imported when built
        self.gateway: GatewayProcess | None = None
        self.settings: Settings | None = None
        self.feature_log_on_tmpfs = False
        self.users: tuple[str, ...] = ()
        self.items: tuple[str, ...] = ()
        self._gateway_starts = 0
        self._triton_starts = 0

    # --- building -------------------------------------------------------------------------

    def build(
        self,
        features: Path,
        *,
        data: Path | None = None,
        models: Path | None = None,
        text_cache: Path | None = None,
    ) -> FaultStack:
        """Starts the stores, loads the features, registers the models and starts Triton and the
        gateway.

        Args:
            features: the feature definitions (the repo's features/); copied.
            data: a built feature data folder to copy; else a small synthetic one is made.
            models: a trained model repository to copy; else both targets train (1 epoch).
            text_cache: text encodings cache for the synthetic data.
        """
        from scoring import workflows

        self.say("redis and postgresql of the stack's own")
        self.redis.start()
        self.redis.wait_ready()
        self.postgres = PostgresServer()
        self.postgres.start()
        feast_registry = self.postgres.create_database("feast")
        models_url = self.postgres.create_database("models")

        repo = self.work / "features"
        ignore = shutil.ignore_patterns("data", "__pycache__", "*.db", "served", "events")
        shutil.copytree(features, repo, ignore=ignore)
        fs_yaml = production_fs_yaml(repo, self.redis.address, feast_registry)
        model_repo = self.work / "model_repository"
        run = self.work / "gateway"
        self.feature_log_on_tmpfs = mount_tmpfs(run / "served", FEATURE_LOG_TMPFS_SIZE)
        settings = gateway_settings(
            FeastSettings(repo_path=repo, fs_yaml=fs_yaml),
            triton_settings(model_repo, self.work / "triton"),
            run,
            models_url,
            health_poll_interval_s=0.2,
            feature_read="redis",
            feature_log_flush_interval_s=0.2,
            feature_log_retry_max_s=1.0,
            # Every server and the load share this machine (2 cores in CI): the default 300 ms
            # feature budget times out now and then with no fault at all.
            feature_timeout_ms=500,
        )
        settings.registry.ack_timeout_s = 15.0
        settings.registry.drain_s = 0.5
        self.settings = settings

        if models is not None:
            # Triton starts while Feast applies and materializes (it needs only the models).
            shutil.copytree(models, model_repo)
            self._register_copied(models_url)
            self._spawn_triton()
        self.say("feature data, feast apply, materialize into redis")
        if data is not None:
            shutil.copytree(data, repo / "data", ignore=ignore)
        else:
            self._synthetic_data(repo / "data", text_cache)
        workflows.apply_features(settings)
        workflows.materialize_features(settings)
        self._read_ids(repo / "data")
        if models is None:
            self.say("training both targets (1 epoch)")
            from scoring.trainer.train import TrainConfig

            workflows.train_and_register(settings, None, TrainConfig(epochs=1), actor="faults")
            self._promote_newest(models_url)
            self._spawn_triton()
        self.say("triton and the gateway")
        self._triton_ready()
        self.start_gateway()
        return self

    def _synthetic_data(self, data: Path, text_cache: Path | None) -> None:
        from scoring.datagen.dataset import build_data_set
        from scoring.datagen.synthetic import SyntheticConfig, generate

        end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        config = SyntheticConfig(200, 150, 30, 8000, 4000, days=14, end=end)
        build_data_set(generate(config), data, text_cache=text_cache)

    def _read_ids(self, data: Path) -> None:
        import pandas as pd

        items = pd.read_parquet(data / "item_stats.parquet", columns=["item_id"])["item_id"]
        users = pd.read_parquet(data / "user_behavior.parquet", columns=["user_id"])["user_id"]
        self.items = tuple(sorted(set(items)))[:60]
        self.users = tuple(sorted(set(users)))[:100]

    def _register_copied(self, models_url: str) -> None:
        from scoring.registry import Registry
        from scoring.registry.promotion import register_version
        from scoring.trainer.export import list_versions, read_manifest
        from scoring.triton.server import servable_models

        models = self.config.triton.model_repository
        with Registry(models_url) as registry:
            for name in servable_models(models, TARGETS):
                version = list_versions(models / name)[-1]
                manifest = read_manifest(models / name, version)
                register_version(registry, models, name, version, manifest, "faults")
        self._promote_newest(models_url)

    def _promote_newest(self, models_url: str) -> None:
        """Each target's newest registered version into production (registry only)."""
        from scoring.registry import Registry, Stage

        with Registry(models_url) as registry:
            for name in TARGETS:
                versions = registry.versions(name)
                if versions:
                    version = versions[-1].version
                    registry.set_stage(
                        name, version, Stage.PRODUCTION, actor="faults", reason="fault stack"
                    )

    @property
    def config(self) -> Settings:
        assert self.settings is not None, "build() first"
        return self.settings

    # --- the servers, started and stopped -------------------------------------------------

    def start_triton(self) -> None:
        """Starts Triton, waits until ready and loads the registry's versions (`scoring serve
        triton` does the same)."""
        self._spawn_triton()
        self._triton_ready()

    def _spawn_triton(self) -> None:
        from scoring.triton.server import TritonServer, servable_models

        models = servable_models(self.config.triton.model_repository, TARGETS)
        self._triton_starts += 1
        log = self.work / f"triton-{self._triton_starts}.log"
        self.triton = TritonServer(self.config.triton, models, log_path=log)
        self.triton.start()

    def _triton_ready(self) -> None:
        from scoring import workflows

        try:
            self.triton.wait_ready()
        except Exception:
            self.triton.stop()
            raise
        workflows.sync_triton(self.config)

    def stop_triton(self) -> None:
        if self.triton is not None:
            self.triton.stop()

    def start_gateway(self, *, wait_serving: bool = True, **overrides: Any) -> None:
        """Starts the gateway; waits until it reports SERVING, or (not `wait_serving`) only
        until its health service answers at all. `overrides` replace GatewaySettings fields
        for this start only."""
        self._gateway_starts += 1
        log = self.work / f"gateway-{self._gateway_starts}.log"
        settings = self.config
        if overrides:
            gateway = settings.gateway.model_copy(update=overrides)
            settings = settings.model_copy(update={"gateway": gateway})
        process = GatewayProcess if wait_serving else AnsweringGateway
        self.gateway = process(settings, log_path=log)
        self.gateway.start()
        self.gateway.wait_ready()

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()

    @property
    def address(self) -> str:
        return f"{self.config.gateway.host}:{self.config.gateway.port}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (with these labels) on the gateway's /metrics."""
        url = f"http://127.0.0.1:{self.config.gateway.metrics_port}/metrics"
        return scrape_metrics(url, timeout_s=2.0, labels=labels).get(name, 0.0)

    def close(self) -> None:
        """Stops the gateway (flushing its logs), Triton and the stores; unmounts the tmpfs."""
        for stop in (self.stop_gateway, self.stop_triton, self.redis.stop):
            with contextlib.suppress(Exception):
                stop()
        if self.postgres is not None:
            self.postgres.close()
        if self.feature_log_on_tmpfs:
            unmount(self.config.gateway.feature_log_dir)

    def __enter__(self) -> FaultStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
