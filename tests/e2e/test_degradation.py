"""Deadlines and degradation against real failures: a frozen or a killed Triton, a killed model
worker, a gateway started before Triton."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.targets import TARGETS
from scoring.gateway.process import GatewayProcess, health_status
from scoring.triton.server import TritonServer

from ..conftest import gateway_settings, require, triton_installed, triton_settings

pytestmark = [pytest.mark.e2e, pytest.mark.triton]
NOW = int(time.time())
IDS = [f"i_{i:06d}" for i in range(0, 60, 3)]
# Deadlines leave room for a busy machine; a frozen Triton or locked store would hold forever.
DEADLINE_S = 2.0


def request(**kw: Any) -> pb.RankRequest:
    r = pb.RankRequest(
        user_id="u_000004",
        candidates=[pb.Candidate(id=i, type=pb.CANDIDATE_TYPE_ITEM) for i in IDS],
        **kw,
    )
    r.context.timestamp.seconds = NOW
    return r


def rank(address: str, req: pb.RankRequest, timeout: float) -> Any:
    """The response, or the error: the client enforces `timeout` itself, so a response means
    the gateway answered within the deadline."""
    with grpc.insecure_channel(address) as channel:
        try:
            return pb_grpc.RankingServiceStub(channel).Rank(req, timeout=timeout)
        except grpc.RpcError as exc:
            return exc


def settled(address: str) -> Any:
    """A normal answer: the first reads of a fresh gateway may miss the feature budget on a
    busy machine, which is not what these tests are about."""
    answer = None
    for _ in range(10):
        answer = rank(address, request(), timeout=5)
        if isinstance(answer, pb.RankResponse) and not answer.degraded:
            return answer
        time.sleep(0.3)
    raise AssertionError(f"no normal answer before the fault: {answer}")


def recover(address: str, within_s: float = 60.0) -> Any:
    """The first answer of the model again, polling; every answer meanwhile in time."""
    give_up = time.monotonic() + within_s
    answer: Any = None
    while time.monotonic() < give_up:
        answer = rank(address, request(), timeout=DEADLINE_S)
        assert isinstance(answer, pb.RankResponse), answer  # never an error, never late
        if not answer.degraded and answer.model_version:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"not recovered in {within_s:.0f} s: {answer}")


@pytest.fixture(scope="module")
def own_stack(
    tmp_path_factory: pytest.TempPathFactory, feature_repo_ready: Any, model_repository: Path
) -> Iterator[tuple[TritonServer, GatewayProcess]]:
    """A Triton and gateway of this module's own, which the tests freeze and kill."""
    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    tmp = tmp_path_factory.mktemp("degradation")
    triton = TritonServer(triton_settings(model_repository, tmp / "triton"), list(TARGETS))
    with triton:
        settings = gateway_settings(feature_repo_ready.path, triton.settings)
        with GatewayProcess(settings, log_path=tmp / "gateway.log") as gateway:
            yield triton, gateway


def test_frozen_triton_never_holds_a_request_past_its_deadline(own_stack: Any) -> None:
    triton, gateway = own_stack
    normal = settled(gateway.address)
    assert not normal.degraded and normal.model_version
    assert triton.process is not None
    os.kill(triton.process.pid, signal.SIGSTOP)  # alive but silent, as a hung GPU server
    try:
        answer = rank(gateway.address, request(), timeout=DEADLINE_S)
        assert isinstance(answer, pb.RankResponse), answer  # within the deadline
        assert answer.degraded and not answer.model_version
        assert any(d.startswith("model_unavailable") for d in answer.degradations)
        assert len(answer.candidates) + len(answer.filtered) == len(IDS), "none lost"

        refused = rank(gateway.address, request(disable_fallback=True), timeout=DEADLINE_S)
        assert isinstance(refused, grpc.RpcError)
        assert refused.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)

        # The circuit breaker opens (the health loop finds Triton silent, or three requests in
        # a row failed): from then on no request waits for the frozen server.
        reasons: list[str] = []
        for _ in range(20):
            answer = rank(gateway.address, request(), timeout=DEADLINE_S)
            assert isinstance(answer, pb.RankResponse), answer
            reasons = list(answer.degradations)
            if any("circuit open" in r for r in reasons):
                break
            time.sleep(0.2)
        assert any("circuit open" in r for r in reasons), reasons
    finally:
        os.kill(triton.process.pid, signal.SIGCONT)
    # Resumed: the health loop's probe answers and closes the breaker, no restart.
    recovered = recover(gateway.address)
    assert not recovered.degraded and recovered.model_version


def model_workers(triton: TritonServer, model: str) -> list[psutil.Process]:
    """Triton's python-backend stub processes of `model`."""
    assert triton.process is not None
    workers = []
    for child in psutil.Process(triton.process.pid).children():
        try:
            command = child.cmdline()  # a killed stub Triton has not reaped is a zombie
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
        stub = command[:1] and command[0].endswith("triton_python_backend_stub")
        if stub and any(f"/{model}/" in arg for arg in command):
            workers.append(child)
    return workers


def test_killed_model_worker_is_detected_and_repaired_without_a_restart(own_stack: Any) -> None:
    """Triton keeps a model whose stub died READY and fails each of its requests after 1 s:
    the gateway's breaker opens, its probe fails while Triton says READY, and it reloads the
    model; every request in between is answered (the fallback) within its deadline."""
    triton, gateway = own_stack
    assert settled(gateway.address).model_version
    (worker,) = model_workers(triton, "item_ranker")
    worker.kill()

    answers: list[Any] = []
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        answer = rank(gateway.address, request(), timeout=DEADLINE_S)
        assert isinstance(answer, pb.RankResponse), answer  # never an error, never late
        answers.append(answer)
        if not answer.degraded and answer.model_version:
            break
        time.sleep(0.2)
    assert answers[-1].model_version and not answers[-1].degraded, "not repaired in 60 s"
    degraded = [a for a in answers if a.degraded]
    assert degraded, "the dead worker was never noticed"
    assert any("circuit open" in r for a in degraded for r in a.degradations)
    (fresh,) = model_workers(triton, "item_ranker")
    assert fresh.pid != worker.pid
    assert "triton_repaired model=item_ranker" in gateway.log_path.read_text()


def test_gateway_started_before_triton_serves_the_fallback_then_the_model(
    tmp_path: Path, feature_repo_ready: Any, model_repository: Path
) -> None:
    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    triton = TritonServer(triton_settings(model_repository, tmp_path / "triton"), list(TARGETS))
    settings = gateway_settings(feature_repo_ready.path, triton.settings)
    gateway = GatewayProcess(settings, log_path=tmp_path / "gateway.log")
    gateway.start()  # not waited for: it cannot report SERVING without Triton
    try:
        give_up = time.monotonic() + 30
        while health_status(gateway.address) is None and time.monotonic() < give_up:
            time.sleep(0.2)
        first: Any = None
        while time.monotonic() < give_up:
            first = rank(gateway.address, request(), timeout=DEADLINE_S)
            if isinstance(first, pb.RankResponse):
                break
            time.sleep(0.3)  # its first health round (reading the feature registry) is running
        assert isinstance(first, pb.RankResponse), first
        assert first.degraded and not first.model_version
        assert any(d.startswith("model_unavailable") for d in first.degradations)
        assert len(first.candidates) + len(first.filtered) == len(IDS)

        with triton:  # Triton comes up: the same gateway process switches to the model
            give_up = time.monotonic() + 60
            answer = first
            while time.monotonic() < give_up:
                answer = rank(gateway.address, request(), timeout=DEADLINE_S)
                assert isinstance(answer, pb.RankResponse), answer
                if answer.model_version:
                    break
                time.sleep(0.2)
            assert answer.model_version and not answer.degraded
            assert gateway.process is not None and gateway.process.poll() is None
    finally:
        gateway.stop()


def test_killed_triton_gives_the_popularity_fallback_or_unavailable(
    own_stack: Any, feature_repo_ready: Any
) -> None:
    triton, gateway = own_stack
    assert triton.process is not None
    os.killpg(triton.process.pid, signal.SIGKILL)  # the server and its python stubs, as a crash
    triton.process.wait()

    answer = rank(gateway.address, request(), timeout=2)
    assert isinstance(answer, pb.RankResponse), answer
    assert answer.degraded and not answer.model_version
    sales = feature_repo_ready.data.tables["item_stats"].sort_values("event_timestamp")
    sales = sales.groupby("item_id").tail(1).set_index("item_id")["sales_7d"]
    in_stock = [c.id for c in answer.candidates]
    assert list(sales[in_stock]) == sorted(sales[in_stock], reverse=True), "popularity order"

    refused = rank(gateway.address, request(disable_fallback=True), timeout=2)
    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.UNAVAILABLE
