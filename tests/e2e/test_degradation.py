"""Deadlines and degradation against real failures: a frozen or a killed Triton."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.targets import TARGETS
from scoring.gateway.process import GatewayProcess
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
    normal = rank(gateway.address, request(), timeout=5)
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
        assert refused.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        os.kill(triton.process.pid, signal.SIGCONT)
    recovered = rank(gateway.address, request(), timeout=5)
    assert not recovered.degraded


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
