"""Settings for a throwaway local stack (tests, benchmarks): every server on a free 127.0.0.1
port, the gateway's files under one folder of its own."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from scoring.core.settings import (
    FeastSettings,
    GatewaySettings,
    PrivacySettings,
    RegistrySettings,
    Settings,
    TritonSettings,
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 that nothing listens on now
    (gateway workers serve metrics on a base port + their index)."""
    for _ in range(100):
        first = free_port()
        if first + count > 65536:
            continue
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


def triton_settings(model_repository: Path, work_dir: Path) -> TritonSettings:
    """A local Triton on free ports serving `model_repository`, its backends built in
    `work_dir`."""
    return TritonSettings(
        url=f"127.0.0.1:{free_port()}",
        http_port=free_port(),
        metrics_port=free_port(),
        model_repository=model_repository,
        work_dir=work_dir,
    )


def gateway_settings(
    feast: FeastSettings,
    triton: TritonSettings,
    run: Path,
    registry_url: str | None = None,
    **gateway: Any,
) -> Settings:
    """A gateway on free ports; its served-feature log, experiment events, privacy secret and
    (unless `registry_url` is given) a SQLite model registry go under `run`. `gateway`
    overrides GatewaySettings fields."""
    fields = {
        "port": free_port(),
        "metrics_port": free_port(),
        "feature_log_dir": run / "served",
        "events_dir": run / "events",
        **gateway,
    }
    return Settings(
        feast=feast,
        triton=triton,
        gateway=GatewaySettings(**fields),
        registry=RegistrySettings(url=registry_url or f"sqlite:///{run / 'registry.db'}"),
        privacy=PrivacySettings(secret_file=run / "privacy_secret"),
    )
