"""The fault scenarios of the reliability harness, on a FaultStack, and the run of them all.

Each scenario names the fault, the behaviour promised under it and how it is injected and
removed; scoring.devtools.reliability runs it under load and judges the promise. The stores,
the served-feature log's disk and bad model versions are here; Triton's faults in
scoring.devtools.triton_faults.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scoring.devtools.fault_stack import FAULT_TARGET, FaultStack
from scoring.devtools.load import LoadShape, RankRecord
from scoring.devtools.reconcile import GatewayLogs
from scoring.devtools.reliability import (
    Check,
    Phases,
    Scenario,
    ScenarioResult,
    Timeline,
    first_line,
    run_scenario,
    versions_check,
)
from scoring.devtools.triton_faults import (
    gateway_before_triton,
    stub_kill,
    triton_hang,
    triton_kill,
)

logger = logging.getLogger(__name__)


# --- the stores -------------------------------------------------------------------------------


def redis_outage(stack: FaultStack, phases: Phases) -> Scenario:
    def restore() -> None:
        stack.redis.start()
        stack.redis.wait_ready()

    return Scenario(
        name="redis-restart",
        fault="Redis (Feast online store) stopped (SIGTERM, its data saved) and started again",
        promise="Every request answered within its deadline; while Redis is down the answers "
        "use default features and are flagged degraded `features_*`; the gateway reads Redis "
        "again by itself once it is back.",
        inject=stack.redis.stop,
        restore=restore,
        phases=phases,
        allowed_degradations=("features_",),
        degraded_while_down=True,
    )


@dataclass
class PostgresOutage:
    """The model registry's PostgreSQL stopped and started again; a promotion tried meanwhile."""

    stack: FaultStack
    registry: Any = None
    promoter: Any = None
    error: BaseException | None = None
    took_s: float = 0.0

    def prepare(self) -> None:
        from scoring import workflows
        from scoring.registry import Registry

        self.registry = Registry(self.stack.config.registry.url, migrate=False)
        self.promoter = workflows.build_promoter(self.stack.config, self.registry, "faults")

    def promote(self) -> None:
        from scoring.trainer.export import list_versions

        version = list_versions(self.stack.config.triton.model_repository / FAULT_TARGET)[-1]
        started = time.monotonic()
        try:
            self.promoter.promote(
                FAULT_TARGET, version, force=True, reason="reliability: while down"
            )
        except Exception as exc:
            self.error = exc
        self.took_s = time.monotonic() - started

    def heartbeats(self) -> bool:
        assert self.registry is not None
        return bool(self.registry.instances(max_age_s=1.0))

    def checks(self, timeline: Timeline, records: Sequence[RankRecord]) -> list[Check]:
        port = str(self.stack.postgres.port) if self.stack.postgres else "?"
        message = str(self.error or "")
        clear = self.error is not None and ("refused" in message.lower() or port in message)
        if self.registry is not None:
            self.registry.close()
        return [
            Check(
                "a promotion while down fails at once, naming the database",
                clear and self.took_s < 10.0,
                f"{first_line(self.error)} ({self.took_s:.1f} s)",
            ),
            versions_check(records),
        ]


def postgres_outage(stack: FaultStack, phases: Phases) -> Scenario:
    assert stack.postgres is not None
    outage = PostgresOutage(stack)
    return Scenario(
        name="postgres-restart",
        fault="PostgreSQL (model registry and Feast registry) stopped (fast shutdown) and "
        "started again; a promotion attempted while it is down",
        promise="Serving unaffected (the last routing kept: answers not degraded, one model "
        "version); the promotion fails at once with an error naming the database; the "
        "gateway's heartbeats resume by themselves.",
        inject=stack.postgres.stop,
        restore=stack.postgres.start,
        phases=phases,
        prepare=outage.prepare,
        midway=outage.promote,
        recovered=outage.heartbeats,
        checks=outage.checks,
    )


# --- the served-feature log's disk --------------------------------------------------------


@dataclass
class FullDisk:
    """The served-feature log's filesystem full: on the stack's tmpfs a filler file takes every
    free byte (writes fail with ENOSPC); without a tmpfs the folder is replaced by a file
    (writes fail with ENOTDIR), which is said in the scenario's fault."""

    stack: FaultStack
    bound: int | None = None  # a queue bound (rows) the fault outlasts, on a gateway of its own
    failures: float = 0.0
    dropped: float = 0.0

    @property
    def folder(self) -> Path:
        return self.stack.config.gateway.feature_log_dir

    def prepare(self) -> None:
        if self.bound is not None:
            self.stack.stop_gateway()
            self.stack.start_gateway(feature_log_max_rows=self.bound)
        self.failures = self.stack.metric("scoring_feature_log_write_failures_total")
        self.dropped = self.drops()

    def drops(self) -> float:
        """Rows not logged because the queue was full, since `prepare`."""
        full = self.stack.metric("scoring_feature_log_dropped_rows_total", reason="queue_full")
        return full - self.dropped

    def finish(self) -> None:
        """The gateway with the stack's own settings back."""
        if self.bound is not None:
            self.stack.stop_gateway()
            self.stack.start_gateway()

    def inject(self) -> None:
        if self.stack.feature_log_on_tmpfs:
            fd = os.open(self.folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            block = b"\0" * 2**20
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
            finally:
                os.close(fd)
        else:
            self.folder.rename(self.folder.with_name("served.aside"))
            self.folder.write_text("not a folder: the served-feature log cannot write here\n")

    def restore(self) -> None:
        if self.stack.feature_log_on_tmpfs:
            (self.folder / "filler").unlink()
        else:
            self.folder.unlink()
            self.folder.with_name("served.aside").rename(self.folder)

    def drained(self) -> bool:
        return self.stack.metric("scoring_feature_log_pending_rows") == 0

    def checks(self, timeline: Timeline, records: Sequence[RankRecord]) -> list[Check]:
        failures = self.stack.metric("scoring_feature_log_write_failures_total") - self.failures
        dropped = self.drops()
        leftovers = len(list(self.folder.glob("target=*/date=*/.part-*.tmp")))
        checks = [
            Check(
                "writes failed while the disk was full (the fault was real)",
                failures > 0,
                f"{failures:.0f} failed writes; {leftovers} partial temporary files left",
            )
        ]
        if self.bound is None:
            checks.append(
                Check("no row dropped (within the queue bound)", dropped == 0, f"{dropped:.0f}")
            )
        else:
            checks.append(
                Check(
                    "rows past the bound dropped and counted (the bound was reached)",
                    dropped > 0,
                    f"{dropped:.0f} rows counted (bound {self.bound})",
                )
            )
        return checks


def feature_log_disk_full(stack: FaultStack, phases: Phases, bound: int | None = None) -> Scenario:
    disk = FullDisk(stack, bound)
    how = (
        "its tmpfs filled to the last byte (ENOSPC)"
        if stack.feature_log_on_tmpfs
        else "its folder replaced by a file (ENOTDIR; no tmpfs could be mounted here)"
    )
    if bound is None:
        name, promise = (
            "feature-log-disk-full",
            (
                "Requests unaffected (answered, not degraded, in time); the log keeps the rows in "
                "its bounded queue and writes them once there is room: nothing lost."
            ),
        )
    else:
        how += f", longer than a queue bound of {bound} rows lasts (a gateway started with it)"
        name, promise = (
            "feature-log-queue-full",
            (
                "Requests unaffected (answered, not degraded, in time); rows past the queue bound "
                "are not logged but counted (scoring_feature_log_dropped_rows_total): the log "
                "misses exactly the counted rows; the rest are written once there is room."
            ),
        )
    return Scenario(
        name=name,
        fault=f"The served-feature log's disk full: {how}, then room again",
        promise=promise,
        inject=disk.inject,
        restore=disk.restore,
        phases=phases,
        prepare=disk.prepare,
        recovered=disk.drained,
        checks=disk.checks,
        counted_drops=disk.drops if bound is not None else None,
        finish=disk.finish,
    )


# --- a bad model version offered for promotion --------------------------------------------


@dataclass
class BadVersion:
    """A new version of item_ranker copied from production, then broken: `checksum` changes
    the file after it was registered, `unloadable` registers a file that is no TorchScript
    (its checksum matches, so only Triton's load can refuse it)."""

    stack: FaultStack
    kind: str
    version: int = 0
    production: int = 0
    registry: Any = None
    promoter: Any = None
    error: BaseException | None = None

    @property
    def models(self) -> Path:
        return Path(self.stack.config.triton.model_repository) / FAULT_TARGET

    def prepare(self) -> None:
        from scoring import workflows
        from scoring.registry import Registry
        from scoring.registry.promotion import register_version
        from scoring.trainer.export import list_versions, read_manifest

        self.registry = Registry(self.stack.config.registry.url, migrate=False)
        routing = self.registry.routing().targets[FAULT_TARGET]
        self.production = routing.production.version
        registered = [r.version for r in self.registry.versions(FAULT_TARGET)]
        self.version = max(list_versions(self.models) + registered) + 1
        folder = self.models / str(self.version)
        shutil.copytree(self.models / str(self.production), folder)
        model = folder / "model.pt"
        if self.kind == "unloadable":
            model.write_bytes(b"this is no TorchScript archive\n" * 64)
        manifest = read_manifest(self.models, self.version)
        register_version(
            self.registry, self.stack.config.triton.model_repository, FAULT_TARGET, self.version,
            manifest, "faults",
        )  # fmt: skip
        if self.kind == "checksum":
            with model.open("ab") as out:
                out.write(b"changed after registration")
        self.promoter = workflows.build_promoter(self.stack.config, self.registry, "faults")

    def promote(self) -> None:
        try:
            self.promoter.promote(FAULT_TARGET, self.version, reason=f"reliability: {self.kind}")
        except Exception as exc:
            self.error = exc

    def restore(self) -> None:
        # A Triton restart loads the newest folder before the registry's versions: not this.
        shutil.rmtree(self.models / str(self.version), ignore_errors=True)

    def checks(self, timeline: Timeline, records: Sequence[RankRecord]) -> list[Check]:
        from scoring.triton.control import TritonControl

        message = str(self.error or "")
        if self.kind == "checksum":
            refused = "checksum" in message
            what = "promotion refused, naming the checksum"
        else:
            refused = self.error is not None and "triton" in message.lower()
            what = "promotion fails on Triton's load, saying so"
        routing = self.registry.routing().targets[FAULT_TARGET]
        self.registry.close()
        loaded = TritonControl(self.stack.config.triton).ready_versions(FAULT_TARGET)
        return [
            Check(what, refused, first_line(self.error)),
            Check(
                "the registry keeps the old production version",
                routing.production.version == self.production,
                f"production v{routing.production.version}",
            ),
            Check(
                "triton keeps serving it",
                loaded == {self.production},
                f"ready versions {sorted(loaded)}",
            ),
            versions_check(records),
        ]


def bad_version(stack: FaultStack, phases: Phases, kind: str) -> Scenario:
    bad = BadVersion(stack, kind)
    fault, promise = {
        "checksum": (
            "A new version whose model.pt changed after registration (checksum mismatch) "
            "offered for promotion",
            "Promotion refused with an error naming the checksum; serving unaffected (not "
            "degraded, the production version throughout).",
        ),
        "unloadable": (
            "A new version whose model.pt is no TorchScript, registered with its matching "
            "checksum, offered for promotion",
            "Promotion fails on Triton's load and says so; the registry and Triton keep the "
            "old version, which serves on unaffected.",
        ),
    }[kind]
    return Scenario(
        name=f"promote-{kind}",
        fault=fault,
        promise=promise,
        inject=bad.promote,
        restore=bad.restore,
        phases=phases,
        prepare=bad.prepare,
        checks=bad.checks,
    )


# --- all of them ------------------------------------------------------------------------------

Factory = Callable[[FaultStack, Phases], Scenario]
SCENARIOS: dict[str, Factory] = {
    "redis-restart": redis_outage,
    "postgres-restart": postgres_outage,
    "feature-log-disk-full": feature_log_disk_full,
    # 20 requests of 20 candidates: a fault of a few seconds at 20 requests a second outlasts it.
    "feature-log-queue-full": lambda stack, phases: feature_log_disk_full(stack, phases, 400),
    "promote-checksum": lambda stack, phases: bad_version(stack, phases, "checksum"),
    "promote-unloadable": lambda stack, phases: bad_version(stack, phases, "unloadable"),
    "triton-hang": triton_hang,
    "triton-stub-kill": stub_kill,
    "triton-kill": triton_kill,
    "gateway-before-triton": gateway_before_triton,
}


def load_shape(stack: FaultStack, rate_per_s: float = 20.0, deadline_s: float = 1.0) -> LoadShape:
    return LoadShape(stack.users, stack.items, rate_per_s=rate_per_s, deadline_s=deadline_s)


def answers_normally(stack: FaultStack, timeout_s: float) -> bool:
    """Whether the gateway gives an answer that is not degraded within `timeout_s`."""
    from scoring.client import RankingClient

    deadline = time.monotonic() + timeout_s
    with RankingClient(stack.address) as client:
        while time.monotonic() < deadline:
            try:
                if not client.rank(stack.users[0], stack.items[:10], timeout_s=2.0).degraded:
                    return True
            except Exception:
                pass
            time.sleep(0.2)
    return False


def heal(stack: FaultStack, timeout_s: float = 15.0) -> list[str]:
    """Brings the stack back to answering normally; returns what had to be restarted."""
    restarted = []
    if stack.redis.process is None or stack.redis.process.poll() is not None:
        stack.redis.stop()
        stack.redis.start()
        stack.redis.wait_ready()
        restarted.append("redis")
    if stack.postgres is not None and stack.postgres.pid is None:
        stack.postgres.start()
        restarted.append("postgresql")
    triton = stack.triton.process if stack.triton is not None else None
    if triton is None or triton.poll() is not None:
        stack.stop_triton()
        stack.start_triton()
        restarted.append("triton")
    if answers_normally(stack, timeout_s):
        return restarted
    steps: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
        ("triton", stack.stop_triton, stack.start_triton),
        ("gateway", stack.stop_gateway, stack.start_gateway),
    ]
    for name, stop, start in steps:
        stop()
        start()
        restarted.append(name)
        if answers_normally(stack, timeout_s):
            break
    return restarted


def run_all(
    stack: FaultStack,
    names: Sequence[str] | None = None,
    phases: Phases | None = None,
    shape: LoadShape | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """Runs the scenarios `names` (all by default) one after the other on `stack`. After each
    one the stack is brought back to normal if it did not come back by itself; that counts
    against the scenario."""
    phases = phases or Phases()
    shape = shape or load_shape(stack)
    logs = GatewayLogs(stack.config.gateway.feature_log_dir, stack.config.gateway.events_dir)
    results = []
    for name in names or list(SCENARIOS):
        scenario = SCENARIOS[name](stack, phases)
        logger.info("scenario %s", name)
        result = run_scenario(scenario, stack.address, logs, shape)
        restarted = heal(stack)
        result = replace(
            result,
            checks=(
                *result.checks,
                Check(
                    "the stack serves normally afterwards without a restart",
                    not restarted,
                    f"restarted {', '.join(restarted)}" if restarted else "",
                ),
            ),
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
