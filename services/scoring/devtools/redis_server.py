"""A redis-server process of its own on 127.0.0.1: the fault stack's Redis, the nodes of a
local Redis Cluster (devtools.redis_cluster), the benches' single node."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scoring.core.process import ManagedProcess, ProcessStartError
from scoring.devtools.local_stack import free_port


def redis_binary() -> str | None:
    return shutil.which("redis-server")


@contextlib.contextmanager
def ping_probe(port: int) -> Iterator[Callable[[], bool]]:
    """A readiness probe: whether the redis-server on 127.0.0.1:`port` answers PING."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)

    def ready() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        yield ready
    finally:
        client.close()


@dataclass
class RedisServer(ManagedProcess):
    """redis-server on 127.0.0.1, saving to `work_dir` when stopped (SIGTERM), so a restart
    finds its data again, as a production Redis with persistence does. Subclasses change its
    options (`server_args`)."""

    name = "redis"
    stop_timeout_s = 10.0

    work_dir: Path
    port: int = field(default_factory=free_port)
    starts: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def startup_timeout_s(self) -> float:
        return 15.0

    def server_args(self) -> list[str]:
        """redis-server options after the address and folder."""
        return ["--save", "3600", "1", "--appendonly", "no"]

    def start(self) -> None:
        binary = redis_binary()
        if binary is None:
            raise ProcessStartError("redis-server is not installed")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        command = [binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", str(self.work_dir), *self.server_args()]
        self._spawn(command, dict(os.environ), self.work_dir / f"redis-{self.starts}.log")

    def _readiness(self) -> contextlib.AbstractContextManager[Callable[[], bool]]:
        return ping_probe(self.port)
