"""Promotion, rollback, canary and shadow on the real stack, under load, with zero failures.

A private Triton (explicit model control) and gateway share a fresh SQLite model registry. Two
versions of item_ranker exist (the session's and one retrained with another seed). While client
threads send Rank requests without fallback over loopback, the test promotes v2, rolls back to
v1, runs v2 as a canary and then in shadow; every request must succeed, and each response names
the version that scored it.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.client import RankingClient
from scoring.core.served_events import read_events
from scoring.core.targets import TARGETS
from scoring.gateway.process import GatewayProcess
from scoring.gateway.routing import bucket
from scoring.registry import Registry, Stage
from scoring.registry.experiments import arm_report
from scoring.registry.promotion import Promoter, register_version, sync
from scoring.trainer.export import read_manifest
from scoring.triton.control import TritonControl

from ..conftest import FeatureRepo, gateway_settings, require, triton_installed, triton_settings

pytestmark = [pytest.mark.e2e, pytest.mark.triton]
TARGET = "item_ranker"
ITEMS = [f"i_{j:06d}" for j in range(12)]


class Answer(NamedTuple):
    """One answered request; times on the monotonic clock."""

    sent: float
    answered: float
    user: str
    arm: str
    version: str
    request_id: str
    first: str  # the top candidate


class Load:
    """Client threads sending Rank requests (no fallback) until stopped; counts outcomes."""

    def __init__(self, address: str, threads: int = 3) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.RankingServiceStub(self.channel)
        self.ok: Counter[tuple[str, str]] = Counter()
        self.failures: list[str] = []
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(threads)]

    def _run(self, k: int) -> None:
        i = 0
        while not self.stopping.is_set():
            i += 1
            user = f"u_{(k * 7919 + i) % 200:06d}"
            request = pb.RankRequest(
                user_id=user,
                candidates=[pb.Candidate(id=c, type=pb.CANDIDATE_TYPE_ITEM) for c in ITEMS],
                disable_fallback=True,
            )
            sent = time.monotonic()
            try:
                response = self.stub.Rank(request, timeout=10.0)
            except grpc.RpcError as exc:
                with self.lock:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            answered = time.monotonic()
            with self.lock:
                self.ok[(response.arm, response.model_version)] += 1
                self.answers.append(
                    Answer(
                        sent,
                        answered,
                        user,
                        response.arm,
                        response.model_version,
                        response.request_id,
                        response.candidates[0].id,
                    )
                )
            time.sleep(0.01)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(30)
        self.channel.close()

    def served_since(self, mark: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
        with self.lock:
            return self.ok - mark

    def snapshot(self) -> Counter[tuple[str, str]]:
        with self.lock:
            return Counter(self.ok)

    def sent_after(self, t: float) -> Counter[tuple[str, str]]:
        """(arm, version) of the answers to requests sent after `t` (monotonic clock): requests
        already in flight during a switch may finish on the old version, by design."""
        with self.lock:
            return Counter((a.arm, a.version) for a in self.answers if a.sent >= t)

    def between(self, start: float, end: float) -> list[Answer]:
        """The answers to requests sent after `start` and answered before `end`: routed by
        whatever routing held all that time."""
        with self.lock:
            return [a for a in self.answers if a.sent >= start and a.answered <= end]


@pytest.fixture(scope="module")
def two_versions(
    tmp_path_factory: pytest.TempPathFactory,
    feature_repo_ready: FeatureRepo,
    model_repository: Path,
) -> Path:
    """A copy of the session's model repository plus item_ranker v2 (another seed)."""
    from scoring.trainer.train import TrainConfig, train_target

    repo = tmp_path_factory.mktemp("promotion") / "model_repository"
    shutil.copytree(model_repository, repo)
    result = train_target(
        feature_repo_ready.store(),
        TARGETS[TARGET],
        feature_repo_ready.path,
        repo,
        TrainConfig(epochs=2, seed=11),
    )
    assert result.created and result.version == 2
    return repo


def register_both(registry: Registry, models: Path) -> None:
    """Registers v1 and v2 of TARGET (v1 in production) and v1 of the other targets."""
    for name in TARGETS:
        for version in (1, 2) if name == TARGET else (1,):
            manifest = read_manifest(models / name, version)
            register_version(registry, models, name, version, manifest, "test")
    registry.set_stage(TARGET, 1, Stage.PRODUCTION, actor="mlops-test", reason="initial")


def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_promote_rollback_canary_shadow_under_load_without_a_failed_request(
    tmp_path: Path, feature_repo_ready: FeatureRepo, two_versions: Path
) -> None:
    from scoring.core.contract import contract_from_store
    from scoring.triton.server import TritonServer

    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    triton_cfg = triton_settings(two_versions, tmp_path / "triton")
    settings = gateway_settings(feature_repo_ready.path, triton_cfg, registry_url=url)
    settings.registry.drain_s = 0.5
    settings.registry.ack_timeout_s = 30.0
    registry = Registry(url)
    store = feature_repo_ready.store()
    register_both(registry, two_versions)
    control = TritonControl(triton_cfg)
    promoter = Promoter(
        settings,
        registry,
        lambda service: contract_from_store(store, service).schema_hash,
        control,
        actor="mlops-test",
    )

    with TritonServer(triton_cfg, list(TARGETS)) as triton:
        assert sync(registry, control, TARGET) == {1}
        with GatewayProcess(settings, log_path=tmp_path / "gateway.log") as gateway:
            with Load(gateway.address) as load:
                wait_until(lambda: load.snapshot()[("production", "1")] >= 10)

                promoter.promote(TARGET, 2, force=True, reason="test: v2 trained for 2 epochs")
                switched = time.monotonic()
                wait_until(lambda: load.sent_after(switched)[("production", "2")] >= 10)
                assert control.ready_versions(TARGET) == {2}, "v1 was not unloaded"
                assert set(load.sent_after(switched)) == {("production", "2")}

                promoter.rollback(TARGET, reason="test: roll back")
                switched = time.monotonic()
                wait_until(lambda: load.sent_after(switched)[("production", "1")] >= 10)
                assert control.ready_versions(TARGET) == {1}
                assert set(load.sent_after(switched)) == {("production", "1")}

                promoter.canary(TARGET, 2, 40.0, force=True, reason="test: canary")
                # Every gateway confirmed the canary's routing: requests sent from now see it.
                canary_on = time.monotonic()
                mark = load.snapshot()
                wait_until(lambda: load.served_since(mark)[("canary", "2")] >= 30)
                assert control.ready_versions(TARGET) == {1, 2}
                canary_off = time.monotonic()

                promoter.stop(TARGET, 2, reason="test: end canary")
                promoter.shadow(TARGET, 2, reason="test: shadow")
                switched = time.monotonic()
                wait_until(lambda: load.sent_after(switched)[("production", "1")] >= 20)
                served = load.sent_after(switched)
                promoter.stop(TARGET, 2, reason="test: end shadow")
                wait_until(lambda: control.ready_versions(TARGET) == {1})
                time.sleep(0.5)

            # Feedback through the RPC, to be joined to the arm that served it (below).
            # While the canary ran: answered before `stop` could change the routing.
            during = load.between(canary_on, canary_off)
            canary_answers = [a for a in load.answers if a.arm == "canary"][:5]
            production_answers = [a for a in during if a.arm == "production"][:2]
            with RankingClient(gateway.address) as client:
                for answer in canary_answers + production_answers:
                    assert client.feedback(answer.request_id, answer.first, "click") == 1

            # Zero failed requests across two switches, a canary and a shadow.
            assert load.failures == [], load.failures[:5]
            assert sum(load.ok.values()) > 100
            print(f"promotion under load: {dict(load.ok)}, {len(load.failures)} failed")
            # The shadow scored requests, and its version was never returned.
            assert set(served) == {("production", "1")}, served
    assert triton.process is None

    shadow = [e for e in read_events(settings.gateway.events_dir, "shadow") if e["version"] == "2"]
    assert len(shadow) >= 10
    assert all(e["primary_version"] == "1" for e in shadow)
    requests = read_events(settings.gateway.events_dir, "request")
    shadowed = {e["request_id"] for e in shadow}
    assert all(r["version"] == "1" for r in requests if r["request_id"] in shadowed)

    # Canary assignment is sticky: while the canary ran, every user got the arm its bucket says
    # (so the same user always the same arm), and the canary's user share is near 40%.
    salt = f"{TARGET}:v2"
    assert len(during) >= 30
    for answer in during:
        expected = "canary" if bucket(salt, answer.user) < 40.0 else "production"
        assert (answer.arm, answer.version) == (
            expected,
            "2" if expected == "canary" else "1",
        ), answer.user
    users = {f"u_{i:06d}" for i in range(200)}
    share = sum(bucket(salt, u) < 40.0 for u in users) / len(users)
    assert 0.30 <= share <= 0.50, share

    # Per-arm CTR: the feedback joined to the arm that served each request.
    stats = {(s.arm, s.version): s for s in arm_report(settings.gateway.events_dir, TARGET)}
    assert {("production", "1"), ("production", "2"), ("canary", "2")} <= set(stats)
    assert stats[("canary", "2")].clicked == len(canary_answers)
    assert stats[("production", "1")].clicked == len(production_answers)
    assert stats[("canary", "2")].requests == load.ok[("canary", "2")]

    # The audit trail has every step, in order, with actor and reason.
    trail = [
        (e.version, e.from_stage, e.to_stage, e.reason)
        for e in registry.history(TARGET)
        if e.from_stage is not None
    ]
    assert trail == [
        (1, Stage.REGISTERED, Stage.PRODUCTION, "initial"),
        (1, Stage.PRODUCTION, Stage.ARCHIVED, "test: v2 trained for 2 epochs"),
        (2, Stage.REGISTERED, Stage.PRODUCTION, "test: v2 trained for 2 epochs"),
        (2, Stage.PRODUCTION, Stage.ARCHIVED, "test: roll back"),
        (1, Stage.ARCHIVED, Stage.PRODUCTION, "test: roll back"),
        (2, Stage.ARCHIVED, Stage.CANARY, "test: canary"),
        (2, Stage.CANARY, Stage.REGISTERED, "test: end canary"),
        (2, Stage.REGISTERED, Stage.SHADOW, "test: shadow"),
        (2, Stage.SHADOW, Stage.REGISTERED, "test: end shadow"),
    ]
    assert all(e.actor == "mlops-test" for e in registry.history(TARGET) if e.from_stage)
    registry.close()
