"""Several gateway processes on one machine sharing one gRPC port, under one parent.

`GatewaySettings.workers` = N > 1: the parent (`supervise`) starts N workers, each
`python -m scoring.gateway --worker I`, a whole gateway of its own (event loop, Triton and
Redis clients, candidate cache, registry heartbeat under its own instance id). Each binds the
same port with SO_REUSEPORT, so the kernel spreads new connections over them (one connection
stays with one worker: a client that wants several workers opens several connections); worker I
serves its Prometheus metrics on `metrics_port` + I and advertises that URL in its heartbeat.

The parent forwards SIGTERM and SIGINT to every worker (each drains its in-flight requests and
logs, then exits) and exits 0 once all exited 0. It restarts no worker: when one exits on its
own, the parent logs it, stops the others the same way and exits 1, so that what runs the
parent (systemd, compose `restart:`, a k8s container) restarts the whole set and shows it. A
worker whose parent is gone (killed with SIGKILL) stops by itself (`server.serve`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from scoring.core.privacy import privacy_secret
from scoring.core.settings import Settings, settings_env

logger = logging.getLogger(__name__)

WORKER_FLAG = "--worker"
# How long the parent waits for its workers to drain after forwarding a stop signal before it
# kills what is left (a worker's own drain: 5 s of in-flight requests, then its logs' flush).
STOP_TIMEOUT_S = 25.0


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker `index`: its own metrics port (`metrics_port` + index; 0 stays
    off)."""
    mine = settings.model_copy(deep=True)
    if mine.gateway.metrics_port:
        mine.gateway.metrics_port += index
    return mine


def worker_command(index: int) -> list[str]:
    """How the parent starts worker `index`."""
    return [sys.executable, "-m", "scoring.gateway", WORKER_FLAG, str(index)]


def worker_index(argv: list[str]) -> int | None:
    """The worker index `--worker I` in `argv` names; None when it names none (no worker)."""
    if WORKER_FLAG not in argv:
        return None
    at = argv.index(WORKER_FLAG)
    try:
        return int(argv[at + 1])
    except (IndexError, ValueError):
        raise SystemExit(f"{WORKER_FLAG} needs a worker index") from None


@dataclass
class WorkerPool:
    """The parent's view of its workers: started, signalled and reaped by PID.

    Attributes:
        command: the command line of worker I (tests start stand-ins).
    """

    settings: Settings
    command: Callable[[int], list[str]] = worker_command
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopping: bool = False
    failed: bool = False
    signalled: str = ""  # the stop signal's name, once one came

    def start(self) -> None:
        gw = self.settings.gateway
        env = {**os.environ, **settings_env(self.settings)}
        for index in range(gw.workers):
            if self.stopping:  # a stop signal came while the workers were starting
                break
            proc = subprocess.Popen(self.command(index), env=env)
            self.procs[index] = proc
            logger.info("gateway_worker_started worker=%d pid=%d", index, proc.pid)

    def signal_all(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    pass

    def on_signal(self, sig: int, _frame: FrameType | None) -> None:
        # A signal handler: no logging here (it may interrupt the logger); `watch` logs.
        self.signalled = signal.Signals(sig).name
        self.stopping = True
        self.signal_all(sig)

    def watch(self) -> None:
        """Returns once every worker exited: after a stop signal, or after one exited on its
        own (then the others are stopped)."""
        while [p.poll() for p in self.procs.values()].count(None):  # polls every one
            if not self.stopping:
                for index, proc in self.procs.items():
                    if proc.returncode is not None:
                        logger.error(
                            "gateway_worker_exited worker=%d pid=%d returncode=%s: stopping the "
                            "other workers (no restart; the parent exits 1)",
                            index,
                            proc.pid,
                            proc.returncode,
                        )
                        self.failed = self.stopping = True
                        self.signal_all(signal.SIGTERM)
                        break
            if self.stopping:
                break
            time.sleep(0.2)
        if self.signalled:
            logger.info("gateway_workers_stopping signal=%s", self.signalled)
        elif not self.stopping:  # all exited between two looks
            self.failed = True
            logger.error("gateway_workers_exited: every worker exited on its own")
        self._reap(time.monotonic() + STOP_TIMEOUT_S)

    def _reap(self, deadline: float) -> None:
        for index, proc in self.procs.items():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.error(
                    "gateway_worker_killed worker=%d pid=%d: no exit in time", index, proc.pid
                )
                proc.kill()
                proc.wait()
            logger.info(
                "gateway_worker_stopped worker=%d pid=%d returncode=%s",
                index,
                proc.pid,
                proc.returncode,
            )

    @property
    def exit_code(self) -> int:
        clean = all(p.returncode == 0 for p in self.procs.values())
        return 0 if clean and not self.failed else 1


def supervise(settings: Settings) -> int:
    """Runs `settings.gateway.workers` workers until SIGTERM/SIGINT or until one exits on its
    own; returns the parent's exit code (0: stopped by a signal, every worker exited 0)."""
    gw = settings.gateway
    if gw.port == 0:
        raise SystemExit("gateway workers share one port: set SCORING_GATEWAY__PORT (not 0)")
    # Errors every worker would hit alike are told once, here: no privacy secret.
    privacy_secret(settings.privacy)
    pool = WorkerPool(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, pool.on_signal)
    pool.start()
    logger.info(
        "gateway_workers workers=%d address=%s:%d metrics_ports=%s",
        gw.workers,
        gw.host,
        gw.port,
        f"{gw.metrics_port}-{gw.metrics_port + gw.workers - 1}" if gw.metrics_port else "off",
    )
    pool.watch()
    logger.info("gateway_workers_stopped exit_code=%d", pool.exit_code)
    return pool.exit_code
