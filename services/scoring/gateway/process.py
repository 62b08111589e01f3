"""Runs the gateway as a child process (demo, tests) and waits for it to report SERVING."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scoring.core.process import log_tail, stop_group
from scoring.core.settings import Settings, settings_env


class GatewayStartError(RuntimeError):
    """The gateway exited or did not report SERVING in time; the message holds its log tail."""


def health_status(address: str, service: str = "", timeout_s: float = 1.0) -> int | None:
    """The gateway's grpc health status, or None if it cannot be reached."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return None
        return int(response.status)


@dataclass
class GatewayProcess:
    """`python -m scoring.gateway` with `settings` passed as SCORING_* variables."""

    settings: Settings
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return f"{self.settings.gateway.host}:{self.settings.gateway.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        env = {**os.environ, **settings_env(self.settings)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scoring.gateway"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        """Polls grpc health until SERVING; fails fast if the process exits."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise GatewayStartError(
                    f"gateway exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if health_status(self.address) == health_pb2.HealthCheckResponse.SERVING:
                return
            time.sleep(0.1)
        raise GatewayStartError(f"gateway not SERVING after {timeout_s}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after `timeout_s`; returns the exit code."""
        proc, self.process = self.process, None
        rc = stop_group(proc, timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def __enter__(self) -> GatewayProcess:
        self.start()
        try:
            self.wait_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
