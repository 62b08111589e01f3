"""Two gateway replicas, one Triton, one model registry: promotion and rollback under load.

Both replicas read their routing from the same SQLite registry and heartbeat the revision they
applied. A thread per replica sends Rank requests (fallback allowed, so a model failure shows as
a degraded answer) and records every outcome with the version that answered. The test checks:

1. promote v2 and roll back to v1: once the command returns, both replicas answer with the new
   version; Triton unloads the old one only after both confirmed; no request fails or degrades;
2. one replica frozen (SIGSTOP) during a promotion: the promotion waits its confirmation timeout,
   names that replica, and keeps the old version loaded, even though the frozen replica's
   heartbeat goes stale meanwhile; the live replica serves the new version; resumed, the frozen
   one catches up by itself; `sync` then unloads the old version;
3. a replica silent for longer than the heartbeat bound before a switch, or one that stopped
   cleanly (forgot itself), does not hold a promotion up.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import grpc
import pytest

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.targets import TARGETS
from scoring.gateway.process import GatewayProcess
from scoring.registry import Registry
from scoring.registry.promotion import Promoter, sync
from scoring.triton.control import TritonControl

from ..conftest import (
    FeatureRepo,
    freeze_between_writes,
    gateway_settings,
    require,
    triton_installed,
    triton_settings,
)
from .test_promotion import ITEMS, TARGET, register_both, wait_until
from .test_promotion import two_versions as two_versions  # the fixture: item_ranker v1 and v2

pytestmark = [pytest.mark.e2e, pytest.mark.triton]
INTERVAL_S = 0.05  # per replica: at most 20 requests a second
DEADLINE_S = 5.0


class Outcome(NamedTuple):
    """One request; times on the monotonic clock. `error` is the status name, "" when answered;
    `degraded` the answer's degradations, "" when none."""

    replica: str
    sent: float
    answered: float
    version: str
    degraded: str
    error: str


class ReplicaLoad:
    """A thread sending Rank requests to one replica over its own channel until stopped; it can
    be paused (for a replica about to be frozen) and resumed."""

    def __init__(self, name: str, address: str, outcomes: list[Outcome], lock: threading.Lock):
        self.name = name
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.RankingServiceStub(self.channel)
        self.outcomes, self.lock = outcomes, lock
        self.stopping = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.idle = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"load-{name}")

    def _run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            if not self.running.is_set():
                self.idle.set()
                self.stopping.wait(0.02)
                continue
            self.idle.clear()
            i += 1
            request = pb.RankRequest(
                user_id=f"u_{i % 200:06d}",
                candidates=[pb.Candidate(id=c, type=pb.CANDIDATE_TYPE_ITEM) for c in ITEMS],
            )
            sent = time.monotonic()
            try:
                response = self.stub.Rank(request, timeout=DEADLINE_S)
            except grpc.RpcError as exc:
                outcome = Outcome(self.name, sent, time.monotonic(), "", "", exc.code().name)
            else:
                degraded = "; ".join(response.degradations) or str(response.degraded or "")
                version = response.model_version
                outcome = Outcome(self.name, sent, time.monotonic(), version, degraded, "")
            with self.lock:
                self.outcomes.append(outcome)
            self.stopping.wait(INTERVAL_S)
        self.idle.set()

    def pause(self) -> None:
        """Returns once no request of this thread is in flight (and none will be sent)."""
        self.running.clear()
        self.idle.clear()
        assert self.idle.wait(DEADLINE_S + 5), f"load on {self.name} did not pause"

    def resume(self) -> None:
        self.running.set()


class Load:
    """One ReplicaLoad per gateway; all outcomes in one list."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.replicas = {
            n: ReplicaLoad(n, a, self.outcomes, self.lock) for n, a in addresses.items()
        }

    def __enter__(self) -> Load:
        for r in self.replicas.values():
            r.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for r in self.replicas.values():
            r.stopping.set()
        for r in self.replicas.values():
            r.thread.join(DEADLINE_S + 5)
            r.channel.close()

    def sent_after(self, t: float, replica: str | None = None) -> list[Outcome]:
        with self.lock:
            return [o for o in self.outcomes if o.sent >= t and replica in (None, o.replica)]

    def versions_after(self, t: float, replica: str) -> Counter[str]:
        return Counter(o.version or o.error for o in self.sent_after(t, replica))

    def figures(self, start: float, end: float) -> dict[str, tuple[int, int, int]]:
        """Per replica, for requests sent in [start, end): (sent, failed, degraded)."""
        with self.lock:
            window = [o for o in self.outcomes if start <= o.sent < end]
        return {
            name: (
                sum(o.replica == name for o in window),
                sum(o.replica == name and bool(o.error) for o in window),
                sum(o.replica == name and bool(o.degraded) for o in window),
            )
            for name in self.replicas
        }


class Drop(NamedTuple):
    """A Triton load that drops versions: when, what was ready, what each gateway confirmed."""

    at: float
    dropped: set[int]
    ready: set[int]
    confirmed: dict[str, int]


@dataclass(frozen=True)
class WatchedControl(TritonControl):
    """TritonControl that records, whenever a load or unload drops versions, which versions
    Triton had ready and the routing revision every gateway had confirmed at that moment."""

    registry: Registry | None = None
    drops: list[Drop] = field(default_factory=list)

    def _record(self, target: str, keep: set[int]) -> None:
        ready = self.ready_versions(target)
        if ready - keep:
            assert self.registry is not None
            confirmed = {i.instance_id: i.revision for i in self.registry.instances()}
            self.drops.append(Drop(time.monotonic(), ready - keep, ready, confirmed))

    def load(self, target: str, versions: Iterable[int]) -> None:
        wanted = set(versions)
        self._record(target, wanted)
        super().load(target, wanted)

    def unload(self, target: str) -> None:
        self._record(target, set())
        super().unload(target)


def instance_of(registry: Registry, gateway: GatewayProcess) -> str:
    """The registry instance id of a gateway process (its id holds the pid)."""
    assert gateway.process is not None
    pid = f"-{gateway.process.pid}-"
    wait_until(lambda: any(pid in i.instance_id for i in registry.instances(60)))
    return next(i.instance_id for i in registry.instances(60) if pid in i.instance_id)


def confirmed(registry: Registry, instance_id: str) -> int:
    """The routing revision an instance last reported (-1: no row)."""
    return next((i.revision for i in registry.instances() if i.instance_id == instance_id), -1)


def signal_gateway(gateway: GatewayProcess, sig: signal.Signals) -> None:
    if gateway.process is not None and gateway.process.poll() is None:
        os.kill(gateway.process.pid, sig)


def gateway_pid(gateway: GatewayProcess) -> int:
    assert gateway.process is not None and gateway.process.poll() is None, gateway.log_tail()
    return gateway.process.pid


def test_two_replicas_switch_together_and_a_silent_one_keeps_the_old_version(
    tmp_path: Path, feature_repo_ready: FeatureRepo, two_versions: Path
) -> None:
    from scoring.core.contract import contract_from_store
    from scoring.triton.server import TritonServer

    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    database = tmp_path / "registry.db"
    url = f"sqlite:///{database}"
    triton_cfg = triton_settings(two_versions, tmp_path / "triton")
    # A feature budget well above the default 300 ms: this test is about the switch, and on a
    # busy 2-core machine an online read can take longer (a degraded answer, not a switch fault).
    settings = {
        name: gateway_settings(
            feature_repo_ready.path, triton_cfg, registry_url=url, feature_timeout_ms=2000
        )
        for name in ("a", "b")
    }
    promoter_settings = settings["a"].model_copy(deep=True)
    cfg = promoter_settings.registry
    cfg.drain_s, cfg.ack_timeout_s = 0.5, 30.0
    registry = Registry(url)
    store = feature_repo_ready.store()
    register_both(registry, two_versions)
    control = WatchedControl(triton_cfg, registry=registry)
    said: list[str] = []
    promoter = Promoter(
        promoter_settings,
        registry,
        lambda service: contract_from_store(store, service).schema_hash,
        control,
        actor="mlops-test",
        say=said.append,
    )

    def note(line: str) -> None:
        print(line)  # figures for the record (pytest -s), shown with a failure too

    def timed(label: str, change: Callable[[], object]) -> float:
        """Runs a stage change; returns the monotonic time it returned at."""
        said.clear()
        start = time.monotonic()
        change()
        end = time.monotonic()
        note(f"{label}: {end - start:.2f} s; " + " | ".join(said))
        return end

    with ExitStack() as stack:
        # Triton and both gateways start side by side (a gateway serves once Triton has v1).
        triton = TritonServer(triton_cfg, list(TARGETS))
        gateways = {
            name: GatewayProcess(s, log_path=tmp_path / f"gateway-{name}.log")
            for name, s in settings.items()
        }
        for server in (triton, *gateways.values()):
            stack.callback(server.stop)
            server.start()
        triton.wait_ready()
        assert sync(registry, control, TARGET) == {1}
        for gateway in gateways.values():
            gateway.wait_ready()
        # Whatever fails below, a frozen replica is resumed before it is stopped.
        stack.callback(signal_gateway, gateways["b"], signal.SIGCONT)
        ids = {name: instance_of(registry, g) for name, g in gateways.items()}
        load = stack.enter_context(Load({n: g.address for n, g in gateways.items()}))
        phases: dict[str, tuple[float, float]] = {}

        def serves(version: int, since: float, replicas: Iterable[str] = ("a", "b")) -> None:
            """Each replica answered >= 10 requests sent after `since`, all with `version`."""
            for r in replicas:
                wait_until(lambda r=r: sum(load.versions_after(since, r).values()) >= 10)
                assert load.versions_after(since, r) == Counter(
                    {str(version): len(load.sent_after(since, r))}
                ), (r, load.versions_after(since, r))

        def switched_after_confirmation(old: int, revision: int, since: float) -> None:
            drops = [d for d in control.drops if d.at >= since]
            assert [d.dropped for d in drops] == [{old}], drops
            assert drops[0].ready == {1, 2}, drops[0]
            assert drops[0].confirmed.keys() == set(ids.values()), drops[0]
            assert all(r >= revision for r in drops[0].confirmed.values()), drops[0]

        # Warm-up, not measured: a replica's first requests pay for its first feature reads.
        start = time.monotonic()
        wait_until(lambda: all(len(load.sent_after(start, r)) >= 5 for r in ids))
        phases["0 warm-up (not measured)"] = (start, time.monotonic())

        # 1. Promote v2 under load: both replicas switch, v1 is unloaded after both confirmed.
        start = time.monotonic()
        serves(1, start)
        returned = timed(
            "promote v2", lambda: promoter.promote(TARGET, 2, force=True, reason="test: v2")
        )
        revision = registry.revision()
        assert control.ready_versions(TARGET) == {2}
        switched_after_confirmation(1, revision, start)
        serves(2, returned)
        phases["1 promote v2"] = (start, time.monotonic())

        # 2. Roll back to v1 under load: the same guarantees.
        start = time.monotonic()
        returned = timed(
            "rollback to v1", lambda: promoter.rollback(TARGET, reason="test: back to v1")
        )
        revision = registry.revision()
        assert control.ready_versions(TARGET) == {1}
        switched_after_confirmation(2, revision, start)
        serves(1, returned)
        phases["2 rollback to v1"] = (start, time.monotonic())

        # 3. Replica b frozen: the promotion times out, names b and keeps v1 loaded. b's heartbeat
        # goes stale during the wait (the bound is shorter than the timeout): it still counts,
        # because b was live when the promotion began and never stopped cleanly.
        cfg.ack_timeout_s, cfg.heartbeat_max_age_s = 4.0, 2.0
        start = time.monotonic()
        load.replicas["b"].pause()
        freeze_between_writes(gateway_pid(gateways["b"]), database)
        began = time.monotonic()
        returned = timed(
            "promote v2, b frozen",
            lambda: promoter.promote(TARGET, 2, force=True, reason="test: b frozen"),
        )
        revision = registry.revision()
        assert returned - began >= cfg.ack_timeout_s
        behind = [m for m in said if m.startswith("gateways still behind")]
        assert len(behind) == 1 and ids["b"] in behind[0] and ids["a"] not in behind[0], said
        assert [ids["b"] in u for u in promoter.unconfirmed] == [True], promoter.unconfirmed
        assert [d for d in control.drops if d.at >= start] == []
        assert control.ready_versions(TARGET) == {1, 2}, "v1 was unloaded under a frozen replica"
        assert confirmed(registry, ids["b"]) < revision <= confirmed(registry, ids["a"])
        serves(2, returned, ["a"])
        # Resumed, b applies the routing by itself (v2 is loaded) and confirms it.
        signal_gateway(gateways["b"], signal.SIGCONT)
        resumed = time.monotonic()
        wait_until(lambda: confirmed(registry, ids["b"]) >= revision)
        note(f"b confirmed {time.monotonic() - resumed:.2f} s after SIGCONT")
        load.replicas["b"].resume()
        serves(2, time.monotonic(), ["b"])
        assert control.ready_versions(TARGET) == {1, 2}  # held until someone unloads it
        assert sync(registry, control, TARGET) == {2}  # what `scoring models sync` does
        assert control.ready_versions(TARGET) == {2}
        phases["3 promote v2, b frozen (timeout)"] = (start, time.monotonic())

        # 4. b silent for longer than the heartbeat bound before the switch: presumed gone, it
        # does not hold the rollback up (a replica that resumes reads the routing on its next
        # health round; requests it takes before that may still go to the unloaded version).
        start = time.monotonic()
        load.replicas["b"].pause()
        freeze_between_writes(gateway_pid(gateways["b"]), database)
        wait_until(lambda: ids["b"] not in {i.instance_id for i in registry.instances(2.0)})
        cfg.ack_timeout_s = 30.0
        began = time.monotonic()
        returned = timed(
            "rollback, b silent > bound", lambda: promoter.rollback(TARGET, reason="test: b silent")
        )
        revision = registry.revision()
        assert returned - began < cfg.ack_timeout_s, "waited for a replica presumed gone"
        assert "gateways: 1 live, all on revision" in " | ".join(said), said
        assert control.ready_versions(TARGET) == {1}
        serves(1, returned, ["a"])
        signal_gateway(gateways["b"], signal.SIGCONT)
        wait_until(lambda: confirmed(registry, ids["b"]) >= revision)
        load.replicas["b"].resume()
        serves(1, time.monotonic(), ["b"])
        phases["4 rollback, b silent > bound"] = (start, time.monotonic())

        # 5. b stopped cleanly (it forgets itself): the promotion waits for a alone.
        cfg.heartbeat_max_age_s = 10.0  # the default: b's row is gone, not stale
        start = time.monotonic()
        load.replicas["b"].pause()
        gateways["b"].stop()
        assert ids["b"] not in {i.instance_id for i in registry.instances()}
        began = time.monotonic()
        returned = timed(
            "promote v2, b stopped",
            lambda: promoter.promote(TARGET, 2, force=True, reason="test: b stopped"),
        )
        assert returned - began < cfg.ack_timeout_s, "waited for a replica that stopped"
        assert "gateways: 1 live, all on revision" in " | ".join(said), said
        assert control.ready_versions(TARGET) == {2}
        serves(2, returned, ["a"])
        phases["5 promote v2, b stopped"] = (start, time.monotonic())

    assert triton.process is None
    for label, (start, end) in phases.items():
        note(f"phase {label}: (sent, failed, degraded) {load.figures(start, end)}")
    warm_up = [o.degraded for o in load.outcomes if o.sent < phases["1 promote v2"][0]]
    note(f"warm-up degradations: {Counter(d for d in warm_up if d)}")
    failed = [o for o in load.outcomes if o.error]
    assert failed == [], failed[:5]
    degraded = [o for o in load.outcomes if o.degraded and o.sent >= phases["1 promote v2"][0]]
    assert degraded == [], degraded[:5]
    assert len(load.outcomes) > 200
    registry.close()
