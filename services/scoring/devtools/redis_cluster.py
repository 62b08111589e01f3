"""A throwaway Redis Cluster on loopback (tests, benchmarks, development): several redis-server
processes, each on a free 127.0.0.1 port with a folder of its own, joined by `redis-cli
--cluster create`, waited on until every node says `cluster_state:ok`, and stopped by PID.

    python -m scoring.devtools.redis_cluster --masters 3 --replicas 1

prints the connection string (FEAST_REDIS_CONNECTION of features/feature_store.cluster.yaml)
and serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from scoring.core.process import ProcessStartError
from scoring.devtools.redis_server import RedisServer

NODE_TIMEOUT_MS = 2000  # how long a silent node takes to be marked failed (failover)


def redis_cluster_binaries() -> tuple[str, str] | None:
    """redis-server and redis-cli (Debian's `redis-server` package), or None."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port that is free, and so is its cluster bus port (+10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 <= 65535 and _bindable(port + 10000):
            return port
        port = 20000 + int.from_bytes(os.urandom(2)) % 25000
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise ProcessStartError("no free port pair for a cluster node")


@dataclass
class ClusterNode(RedisServer):
    """One cluster-enabled redis-server; its nodes.conf (and a dump.rdb, when saved) in
    `work_dir`, so a restart on the same port rejoins the cluster with the same slots."""

    name = "redis cluster node"

    port: int = field(default_factory=free_port_pair)
    node_timeout_ms: int = NODE_TIMEOUT_MS

    def server_args(self) -> list[str]:
        return [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "", "--appendonly", "no",
            "--shutdown-timeout", "0",  # a master stops without waiting for its replicas
            "--repl-diskless-sync-delay", "0",  # replicas sync at once
        ]  # fmt: skip

    def start(self) -> None:
        if redis_cluster_binaries() is None:
            raise ProcessStartError("redis-server / redis-cli are not installed")
        super().start()

    def client(self) -> Any:
        """A plain (not cluster-aware) redis-py client of this node."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5.0)

    def kill(self) -> None:
        """SIGKILL: the node dies as on a crash (its data is gone)."""
        proc, self.process = self.process, None
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Saves its data (as a node with persistence has it), stops it (SIGTERM, by PID) and
        starts it again on the same port and folder: it reloads nodes.conf and dump.rdb."""
        with contextlib.closing(self.client()) as c:
            c.save()
        self.stop()
        self.start()
        self.wait_ready()


class RedisCluster:
    """`masters` nodes holding the 16384 slots, each with `replicas` replicas.

    Args:
        root: where the nodes' folders go (default: a new temporary folder, removed on stop).
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        root: Path | None = None,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.masters, self.replicas = masters, replicas
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="scoring-redis-cluster-"))
        count = masters * (1 + replicas)
        self.nodes = [
            ClusterNode(self.root / f"node-{i}", node_timeout_ms=node_timeout_ms)
            for i in range(count)
        ]

    @property
    def connection_string(self) -> str:
        """Feast's `connection_string` for `redis_type: redis_cluster`: every node."""
        return ",".join(node.address for node in self.nodes)

    def start(self) -> None:
        binaries = redis_cluster_binaries()
        if binaries is None:
            raise ProcessStartError("redis-server / redis-cli are not installed")
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()
        command = [binaries[1], "--cluster", "create", *(n.address for n in self.nodes)]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ProcessStartError(f"redis-cli --cluster create failed:\n{done.stdout}")
        self.wait_ok()
        self._wait_replicas()

    def _wait_replicas(self, timeout_s: float = 30.0) -> None:
        """Until each master has its replicas connected, each in sync (CLUSTER SLOTS lists a
        replica only once it has seen replication traffic: a ping, every 10 s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            complete = True
            for node in self.nodes:
                with contextlib.closing(node.client()) as c:
                    info = c.info("replication")
                if (info.get("role") == "slave" and info.get("master_link_status") != "up") or (
                    info.get("role") == "master" and info.get("connected_slaves") != self.replicas
                ):
                    complete = False
                    break
            if complete:
                return
            time.sleep(0.1)
        raise ProcessStartError(f"replicas not in sync after {timeout_s}s")

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every running node says `cluster_state:ok` and knows every other node."""
        deadline = time.monotonic() + timeout_s
        expected = len(self.nodes)
        last = ""
        while time.monotonic() < deadline:
            ok = True
            for node in self.nodes:
                if node.process is None:
                    continue
                try:
                    with contextlib.closing(node.client()) as c:
                        info = c.execute_command("CLUSTER", "INFO")
                        known = len(c.execute_command("CLUSTER", "NODES"))
                except Exception as exc:  # a node still starting
                    ok, last = False, repr(exc)
                    break
                info = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in info or known < expected:
                    ok, last = False, f"{node.address}: {info.splitlines()[:1]}, knows {known}"
                    break
            if ok:
                return
            time.sleep(0.1)
        raise ProcessStartError(f"cluster not ok after {timeout_s}s: {last}")

    def master_of(self, key: bytes) -> ClusterNode:
        """The node that serves `key`'s slot now."""
        from redis.crc import key_slot

        slot = key_slot(key)
        for start, end, primary, *_ in self._slots():
            if start <= slot <= end:
                port = int(primary[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"slot {slot} is served by no node")

    def primaries(self) -> list[ClusterNode]:
        ports = {int(primary[1]) for _, _, primary, *_ in self._slots()}
        return [n for n in self.nodes if n.port in ports]

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        with contextlib.closing(master.client()) as c:
            info = c.info("replication")
        if not info.get("connected_slaves"):
            raise LookupError(f"{master.address} has no replica")
        port = int(info["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def _slots(self) -> list[Any]:
        for node in self.nodes:
            if node.process is None:
                continue
            with contextlib.closing(node.client()) as c:
                try:
                    return list(c.execute_command("CLUSTER SLOTS"))
                except Exception:
                    continue
        raise LookupError("no node answers")

    def stop(self) -> None:
        for node in self.nodes:  # SIGTERM to all at once, then wait on each
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            node.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0)
    args = parser.parse_args()
    with RedisCluster(args.masters, args.replicas) as cluster:
        print(cluster.connection_string, flush=True)  # noqa: T201
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
