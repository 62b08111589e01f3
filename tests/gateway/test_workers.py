"""The gateway workers' parent (scoring.gateway.workers) with stand-in workers: small Python
processes that exit as a gateway does on SIGTERM (0), or exit on their own."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from scoring.core.settings import GatewaySettings, Settings
from scoring.gateway.workers import WorkerPool, worker_index, worker_settings

# Exits 0 on SIGTERM/SIGINT, as a gateway that drained; prints its own pid first.
SERVE = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
    "while True: time.sleep(0.05)\n"
)
CRASH = "import time; time.sleep(0.5); raise SystemExit(3)"


def pool(*scripts: str) -> WorkerPool:
    settings = Settings(gateway=GatewaySettings(workers=len(scripts)))
    return WorkerPool(settings, command=lambda i: [sys.executable, "-c", scripts[i]])


def test_a_stop_signal_reaches_every_worker_and_the_parent_exits_0() -> None:
    workers = pool(SERVE, SERVE)
    workers.start()
    time.sleep(0.3)
    workers.on_signal(signal.SIGTERM, None)
    workers.watch()
    assert [p.returncode for p in workers.procs.values()] == [0, 0]
    assert workers.exit_code == 0


def test_a_worker_that_exits_stops_the_others_and_the_parent_exits_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    workers = pool(SERVE, CRASH)
    workers.start()
    started = time.monotonic()
    workers.watch()
    assert time.monotonic() - started < 10
    assert [p.returncode for p in workers.procs.values()] == [0, 3]  # worker 0: stopped
    assert workers.failed and workers.exit_code == 1
    assert "gateway_worker_exited worker=1" in caplog.text


def test_worker_settings_and_flag() -> None:
    settings = Settings(gateway=GatewaySettings(workers=3, metrics_port=9464))
    assert [worker_settings(settings, i).gateway.metrics_port for i in range(3)] == [
        9464,
        9465,
        9466,
    ]
    assert settings.gateway.metrics_port == 9464  # a copy each
    off = Settings(gateway=GatewaySettings(workers=2, metrics_port=0))
    assert worker_settings(off, 1).gateway.metrics_port == 0
    assert worker_index(["--worker", "2"]) == 2
    assert worker_index([]) is None
    with pytest.raises(SystemExit):
        worker_index(["--worker"])
