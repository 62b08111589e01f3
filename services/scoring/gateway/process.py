"""Runs the gateway as a child process (demo, tests) and waits for it to report SERVING."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scoring.core.channels import open_channel
from scoring.core.process import ManagedProcess, ProcessStartError
from scoring.core.settings import Settings, TlsSettings, settings_env


class GatewayStartError(ProcessStartError):
    """The gateway exited or did not report SERVING in time; the message holds its log tail."""


def health_status(
    address: str, service: str = "", timeout_s: float = 1.0, tls: TlsSettings | None = None
) -> int | None:
    """The gateway's grpc health status, or None if it cannot be reached (TLS as `tls` says:
    health needs no caller credentials)."""
    with open_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return None
        return int(response.status)


@dataclass
class GatewayProcess(ManagedProcess):
    """`python -m scoring.gateway` with `settings` passed as SCORING_* variables; ready when
    its grpc health reports SERVING."""

    name = "gateway"
    start_error = GatewayStartError
    stop_timeout_s = 15.0

    settings: Settings
    log_path: Path

    @property
    def address(self) -> str:
        return f"{self.settings.gateway.host}:{self.settings.gateway.port}"

    @property
    def startup_timeout_s(self) -> float:
        return 60.0

    def start(self) -> None:
        env = {**os.environ, **settings_env(self.settings)}
        self._spawn([sys.executable, "-m", "scoring.gateway"], env, self.log_path)

    def _readiness(self) -> AbstractContextManager[Callable[[], bool]]:
        return nullcontext(self._serving)

    def _serving(self) -> bool:
        status = health_status(self.address, tls=self.settings.tls)
        return bool(status == health_pb2.HealthCheckResponse.SERVING)
