"""The gateway's event loop: uvloop by default, the standard library's on request; grpc.aio
(server and client) works on both."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from scoring.core.settings import GatewaySettings
from scoring.gateway.server import loop_factory


def test_uvloop_is_the_default_and_asyncio_the_fallback() -> None:
    assert GatewaySettings().event_loop == "uvloop"
    factory = loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert loop_factory("asyncio") is None  # asyncio.Runner's own loop


async def health_round_trip() -> tuple[str, int]:
    """A grpc.aio server and client on the running loop: one health Check."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
    finally:
        await server.stop(None)
    return type(asyncio.get_running_loop()).__module__, reply.status


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_grpc_aio_serves_on_the_configured_loop(kind: str) -> None:
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        module, status = runner.run(health_round_trip())
    assert module.startswith("uvloop" if kind == "uvloop" else "asyncio")
    assert status == health_pb2.HealthCheckResponse.SERVING
