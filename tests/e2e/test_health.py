"""Gateway health follows its dependencies: NOT_SERVING until Triton and Feast answer."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from scoring.core.settings import Settings
from scoring.core.targets import TARGETS
from scoring.gateway.process import GatewayProcess, health_status
from scoring.triton.server import TritonServer

from ..conftest import (
    copy_feature_repo,
    gateway_settings,
    require,
    triton_installed,
    triton_settings,
)

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_status(address: str, wanted: int, timeout_s: float = 30.0) -> int | None:
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = health_status(address)
        if status == wanted:
            return status
        time.sleep(0.1)
    return status


@contextmanager
def not_serving(settings: Settings, log_path: Path) -> Iterator[GatewayProcess]:
    """A started gateway that reports NOT_SERVING, and still does after several health rounds;
    stopped on exit, which must be clean."""
    gateway = GatewayProcess(settings, log_path=log_path)
    gateway.start()
    try:
        assert wait_status(gateway.address, NOT_SERVING) == NOT_SERVING
        time.sleep(1.0)  # several health rounds
        assert health_status(gateway.address) == NOT_SERVING
        yield gateway
    finally:
        assert gateway.stop() == 0, gateway.log_tail()


def test_not_serving_until_triton_is_up_then_serving_then_not(
    tmp_path: Path, feature_repo_ready: Any, model_repository: Path
) -> None:
    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    triton_cfg = triton_settings(model_repository, tmp_path / "triton")
    settings = gateway_settings(feature_repo_ready.path, triton_cfg)
    with not_serving(settings, tmp_path / "gateway.log") as gateway:  # Triton is absent
        with TritonServer(triton_cfg, list(TARGETS)):
            assert wait_status(gateway.address, SERVING) == SERVING
        assert wait_status(gateway.address, NOT_SERVING) == NOT_SERVING
        # Start-up's heap went out of the collector's reach once, when it first served.
        log = gateway.log_path.read_text().splitlines()
        frozen = [line for line in log if "gc_frozen" in line]
        assert len(frozen) == 1 and int(frozen[0].rsplit("objects=", 1)[1]) > 100_000, frozen


def test_not_serving_without_a_feature_registry(tmp_path: Path, triton: Any) -> None:
    repo = copy_feature_repo(tmp_path / "features")  # definitions only: never applied
    shutil.rmtree(repo / "data", ignore_errors=True)
    settings = gateway_settings(repo, triton.settings)
    with not_serving(settings, tmp_path / "gateway.log"):
        pass  # the checks are the context's: NOT_SERVING throughout, then a clean stop


def test_not_serving_until_the_model_registry_answers_once(
    tmp_path: Path, feature_repo_ready: Any, triton: Any
) -> None:
    """Which versions serve is the registry's call: a gateway that never read it serves nothing
    (Triton may hold a canary), and starts serving as soon as it can read it."""
    blocker = tmp_path / "registry"
    blocker.write_text("a file where the registry's folder should be")
    url = f"sqlite:///{blocker / 'registry.db'}"
    settings = gateway_settings(feature_repo_ready.path, triton.settings, registry_url=url)
    with not_serving(settings, tmp_path / "gateway.log") as gateway:  # no registry yet
        blocker.unlink()
        assert wait_status(gateway.address, SERVING) == SERVING
    assert "registry_unreadable" in gateway.log_tail(200)
