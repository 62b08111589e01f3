"""Access to a real gateway process: TLS, mutual TLS, bearer tokens, allow-lists and per-caller
limits, with certificates made in the test. Health stays open (readiness is checked over TLS
without credentials); the gateway log and metrics name the caller."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.cli import app
from scoring.client import RankingClient
from scoring.core.access import token_sha256
from scoring.core.channels import open_channel
from scoring.core.settings import AuthSettings, CallerSettings, TlsSettings
from scoring.gateway.process import GatewayProcess

from ..conftest import FeatureRepo, gateway_settings
from ..tls import Issued, TestCA

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

ROOT = Path(__file__).resolve().parents[2]
WEB, SLOW, BURSTY = "web-token", "one-at-a-time-token", "bursty-token"
NOW = int(time.time())
IDS = [f"i_{i:06d}" for i in range(0, 60, 3)]


def rank_request(n: int = len(IDS)) -> pb.RankRequest:
    # Beyond the 20 known items, unknown ids (scored with default features).
    ids = IDS[:n] if n <= len(IDS) else [f"i_{i:06d}" for i in range(n)]
    request = pb.RankRequest(
        user_id="u_000004",
        candidates=[pb.Candidate(id=i, type=pb.CANDIDATE_TYPE_ITEM) for i in ids],
    )
    request.context.timestamp.seconds = NOW
    return request


def callers_file(path: Path) -> Path:
    """web: Rank + Feedback; edge: by certificate, Rank only; two limited callers."""
    entries = [
        CallerSettings(name="web", token_sha256=(token_sha256(WEB),), rpcs=("Rank", "Feedback")),
        CallerSettings(name="edge", cert_cn="edge.internal", rpcs=("Rank",)),
        CallerSettings(
            name="one-at-a-time", token_sha256=(token_sha256(SLOW),), rpcs=("*",), max_concurrent=1
        ),
        CallerSettings(
            name="bursty",
            token_sha256=(token_sha256(BURSTY),),
            rpcs=("Rank",),
            rate_per_s=0.2,
            burst=2,
        ),
    ]
    import yaml

    path.write_text(yaml.safe_dump([e.model_dump(mode="json") for e in entries]))
    return path


@dataclass(frozen=True)
class Pki:
    ca: TestCA
    server: Issued
    edge: Issued  # a client certificate naming the caller `edge`
    probe: Issued  # a client certificate of no caller (readiness under mutual TLS)
    stranger: Issued  # issued by a CA the gateway does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = TestCA(folder / "ca")
    other = TestCA(folder / "other", name="other-ca")
    return Pki(
        ca,
        ca.issue("gateway", server=True),
        ca.issue("edge.internal"),
        ca.issue("probe"),
        other.issue("edge.internal"),
    )


def client_tls(pki: Pki, client: Issued | None = None) -> TlsSettings:
    return TlsSettings(
        enabled=True,
        ca_file=pki.ca.path,
        client_cert_file=client.cert if client else None,
        client_key_file=client.key if client else None,
    )


@contextmanager
def secured_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    repo: FeatureRepo,
    triton: Any,
    pki: Pki,
    *,
    mutual: bool,
) -> Iterator[GatewayProcess]:
    """A gateway serving TLS (mutual TLS when `mutual`), auth required, the callers of
    `callers_file`."""
    tmp = tmp_path_factory.mktemp("access-mtls" if mutual else "access-tls")
    settings = gateway_settings(repo.path, triton.settings)
    # Server side: the gateway's certificate (and the client CA under mutual TLS); client
    # side, for the readiness probe: the CA (and a certificate of no caller).
    tls = client_tls(pki, pki.probe if mutual else None).model_copy(
        update={
            "cert_file": pki.server.cert,
            "key_file": pki.server.key,
            "client_ca_file": pki.ca.path if mutual else None,
            "require_client_cert": mutual,
        }
    )
    auth = AuthSettings(required=True, callers_file=callers_file(tmp / "callers.yaml"))
    settings = settings.model_copy(update={"tls": tls, "auth": auth})
    with GatewayProcess(settings, log_path=tmp / "gateway.log") as process:
        yield process


@pytest.fixture(scope="module")
def tls_gateway(
    tmp_path_factory: pytest.TempPathFactory, feature_repo_ready: FeatureRepo, triton: Any, pki: Pki
) -> Iterator[GatewayProcess]:
    """TLS (server certificate only), auth required: callers by bearer token."""
    with secured_gateway(tmp_path_factory, feature_repo_ready, triton, pki, mutual=False) as gw:
        yield gw


@pytest.fixture(scope="module")
def mtls_gateway(
    tmp_path_factory: pytest.TempPathFactory, feature_repo_ready: FeatureRepo, triton: Any, pki: Pki
) -> Iterator[GatewayProcess]:
    """Mutual TLS, auth required: the client certificate's CN names the caller."""
    with secured_gateway(tmp_path_factory, feature_repo_ready, triton, pki, mutual=True) as gw:
        yield gw


def rank(address: str, tls: TlsSettings | None, token: str | None, rpc: str = "Rank") -> Any:
    """The response, or the grpc error."""
    with open_channel(address, tls, token) as channel:
        stub = pb_grpc.RankingServiceStub(channel)
        try:
            if rpc == "RankBatch":
                return stub.RankBatch(pb.RankBatchRequest(requests=[rank_request()]), timeout=10)
            return stub.Rank(rank_request(), timeout=10)
        except grpc.RpcError as exc:
            return exc


def code(answer: Any) -> grpc.StatusCode:
    return answer.code() if isinstance(answer, grpc.RpcError) else grpc.StatusCode.OK


def log_text(process: GatewayProcess, *needles: str, timeout_s: float = 10.0) -> str:
    """The gateway's log once it holds every one of `needles` (a background thread writes
    it), or as it is after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = process.log_path.read_text()
        if all(n in text for n in needles) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def metric(process: GatewayProcess, line_start: str) -> float:
    url = f"http://127.0.0.1:{process.settings.gateway.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_tls_gateway_refuses_plaintext_and_checks_tokens(
    tls_gateway: GatewayProcess, pki: Pki
) -> None:
    address, tls = tls_gateway.address, client_tls(pki)

    plaintext = rank(address, None, WEB)
    assert code(plaintext) == grpc.StatusCode.UNAVAILABLE, plaintext

    answer = rank(address, tls, WEB)
    assert isinstance(answer, pb.RankResponse), answer
    assert len(answer.candidates) + len(answer.filtered) == len(IDS)

    bad = rank(address, tls, "not-a-token")
    assert code(bad) == grpc.StatusCode.UNAUTHENTICATED and "not valid" in bad.details()
    missing = rank(address, tls, None)
    assert (
        code(missing) == grpc.StatusCode.UNAUTHENTICATED and "no credentials" in missing.details()
    )

    denied = rank(address, tls, WEB, rpc="RankBatch")
    assert code(denied) == grpc.StatusCode.PERMISSION_DENIED
    assert denied.details() == "caller 'web' may not call RankBatch"

    # Reflection (grpcurl) and health stay open: TLS, no caller credentials.
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with open_channel(address, tls) as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "scoring.api.v1.RankingService" in services

    # The same client the CLI uses, with TLS and the token from settings.
    with RankingClient(address, tls, WEB) as client:
        ranked = client.rank("u_000004", IDS[:5], timestamp_s=NOW)
        assert client.feedback(ranked.request_id, ranked.candidates[0].id) == 1

    expected = (
        "tls=True mutual_tls=False auth_required=True callers=4",
        "caller=web",
        "auth_rejected rpc=Rank caller=unknown reason=unauthenticated",
        "auth_rejected rpc=RankBatch caller=web reason=permission_denied",
    )
    log = log_text(tls_gateway, *expected)
    for line in expected:
        assert line in log, f"{line!r} not in the log:\n{log[-3000:]}"
    assert (
        metric(
            tls_gateway, 'scoring_auth_rejected_total{caller="unknown",reason="unauthenticated"}'
        )
        == 2
    )
    assert (
        metric(tls_gateway, 'scoring_auth_rejected_total{caller="web",reason="permission_denied"}')
        == 1
    )


def test_per_caller_concurrency_and_rate_limits(tls_gateway: GatewayProcess, pki: Pki) -> None:
    address, tls = tls_gateway.address, client_tls(pki)

    # One request at a time: of many sent at once (each ranking 500 candidates), some overlap.
    with open_channel(address, tls, SLOW) as channel:
        stub = pb_grpc.RankingServiceStub(channel)
        calls: list[Future[Any]] = [
            stub.Rank.future(rank_request(500), timeout=20) for _ in range(24)
        ]
        codes = []
        for future in calls:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    details = exc.details() or ""
                    assert "'one-at-a-time'" in details and "max_concurrent 1" in details
    assert grpc.StatusCode.OK in codes, codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    # Its slots were released: one request at a time still passes.
    assert code(rank(address, tls, SLOW)) == grpc.StatusCode.OK

    # A burst of 2, then 0.2 requests/s: the third call in a row is refused.
    answers = [rank(address, tls, BURSTY) for _ in range(3)]
    assert [code(a) for a in answers] == [
        grpc.StatusCode.OK,
        grpc.StatusCode.OK,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]
    assert "'bursty'" in answers[2].details()
    assert "rate limit of 0.2 requests/s (burst 2)" in answers[2].details()
    assert metric(tls_gateway, 'scoring_auth_rejected_total{caller="bursty",reason="rate"}') == 1


def test_rank_cli_and_healthcheck_speak_tls(tls_gateway: GatewayProcess, pki: Pki) -> None:
    env = {
        "SCORING_TLS__ENABLED": "true",
        "SCORING_TLS__CA_FILE": str(pki.ca.path),
        "SCORING_TLS__SERVER_NAME": "localhost",
        "SCORING_AUTH__TOKEN": WEB,
    }
    runner = CliRunner()
    args = ["rank", "u_000004", *IDS[:5], "--address", tls_gateway.address]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "items for u_000004" in result.output
    refused = runner.invoke(app, args, env={**env, "SCORING_AUTH__TOKEN": "wrong"})
    assert refused.exit_code == 1
    assert "UNAUTHENTICATED: the bearer token is not valid" in refused.output

    # The container health check: TLS from the same settings, no caller credentials.
    check_env = {
        **os.environ,
        **env,
        "SCORING_GATEWAY__PORT": str(tls_gateway.settings.gateway.port),
    }
    del check_env["SCORING_AUTH__TOKEN"]

    def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        script = str(ROOT / "docker" / "healthcheck.py")
        return subprocess.run(
            [sys.executable, script], capture_output=True, text=True, timeout=60, env=env
        )

    healthy = healthcheck(check_env)
    assert healthy.returncode == 0, healthy.stderr
    plain = healthcheck({**check_env, "SCORING_TLS__ENABLED": "false"})
    assert plain.returncode == 1 and "unreachable" in plain.stderr


def test_mutual_tls_names_the_caller_by_certificate(mtls_gateway: GatewayProcess, pki: Pki) -> None:
    address = mtls_gateway.address

    answer = rank(address, client_tls(pki, pki.edge), None)
    assert isinstance(answer, pb.RankResponse), answer
    denied = rank(address, client_tls(pki, pki.edge), None, rpc="RankBatch")
    assert code(denied) == grpc.StatusCode.PERMISSION_DENIED
    assert denied.details() == "caller 'edge' may not call RankBatch"

    # A certificate the CA signed but naming no caller; a token then decides.
    unknown = rank(address, client_tls(pki, pki.probe), None)
    assert code(unknown) == grpc.StatusCode.UNAUTHENTICATED
    assert "CN 'probe' is no known caller" in unknown.details()
    assert code(rank(address, client_tls(pki, pki.probe), WEB)) == grpc.StatusCode.OK

    # No client certificate, or one of another CA: the handshake fails.
    assert code(rank(address, client_tls(pki), WEB)) == grpc.StatusCode.UNAVAILABLE
    assert code(rank(address, client_tls(pki, pki.stranger), None)) == grpc.StatusCode.UNAVAILABLE
    assert code(rank(address, None, WEB)) == grpc.StatusCode.UNAVAILABLE

    expected = ("mutual_tls=True auth_required=True", "caller=edge", "caller=web")
    log = log_text(mtls_gateway, *expected)
    for line in expected:
        assert line in log, f"{line!r} not in the log:\n{log[-3000:]}"
