"""`scoring demo` (as `make demo` runs it) works from a fresh folder, twice, and cleans up."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from scoring.gateway.process import health_status

from ..conftest import ROOT, copy_feature_repo, free_port, require, triton_installed

pytestmark = [pytest.mark.e2e, pytest.mark.triton]
SERVING = health_pb2.HealthCheckResponse.SERVING


def port_is_free(port: int) -> bool:
    """Nothing listens on the port (a bind test would trip on the closed server's TIME_WAIT)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def demo_folder(tmp_path: Path) -> None:
    """A fresh folder as a new user has it: the feature repo and the committed model configs."""
    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    copy_feature_repo(tmp_path / "features")
    shutil.copytree(
        ROOT / "model_repository",
        tmp_path / "model_repository",
        ignore=shutil.ignore_patterns("[0-9]*"),
    )


def test_demo_runs_twice_and_cleans_up(tmp_path: Path) -> None:
    demo_folder(tmp_path)
    ports = {
        "SCORING_TRITON__URL": f"127.0.0.1:{free_port()}",
        "SCORING_TRITON__HTTP_PORT": str(free_port()),
        "SCORING_TRITON__METRICS_PORT": str(free_port()),
        "SCORING_GATEWAY__PORT": str(free_port()),
    }
    env = {**os.environ, **ports}
    scoring = str(Path(sys.executable).with_name("scoring"))
    results = []
    for _ in range(2):
        result = subprocess.run(
            [scoring, "demo", "--users", "150", "--epochs", "2"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        results.append(result)
    outputs = [result.stdout for result in results]
    first, second = outputs
    for out in outputs:
        assert "gateway SERVING" in out
        assert "top 5 of 20 products for u_000042" in out
        assert "unknown user: defaults used" in out
        assert "demo done" in out
        assert "feedback: 1 click" in out
    for result in results:  # only the platform's output: no library warnings or colours
        printed = result.stdout + result.stderr
        assert "\x1b[" not in printed, "an ANSI escape (Feast's materialize lines?)"
        assert "deprecated" not in printed.lower(), printed[-3000:]
    assert "(unchanged)" in second, "same day, same data: the second run keeps the version"
    # The registry: the first run promotes v1 through the gates, the second finds it there.
    assert "item_ranker v1 registered -> production" in first
    assert "item_ranker: v1 is in production" in second
    assert (tmp_path / ".run" / "model_registry.db").is_file()
    assert sorted(p.name for p in (tmp_path / "model_repository" / "item_ranker").iterdir()) == [
        "1",
        "config.pbtxt",
        "configs",
    ]
    grpc_port = int(ports["SCORING_TRITON__URL"].rsplit(":", 1)[1])
    assert port_is_free(grpc_port) and port_is_free(int(ports["SCORING_GATEWAY__PORT"]))


def test_ctrl_c_while_the_demo_serves_stops_both_servers(tmp_path: Path) -> None:
    """`scoring demo --serve` waits with both servers up; Ctrl-C there stops them cleanly."""
    demo_folder(tmp_path)
    triton_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SCORING_TRITON__URL": f"127.0.0.1:{triton_port}",
        "SCORING_TRITON__HTTP_PORT": str(free_port()),
        "SCORING_TRITON__METRICS_PORT": str(free_port()),
        "SCORING_GATEWAY__PORT": str(gateway_port),
        "SCORING_GATEWAY__METRICS_PORT": str(free_port()),
    }
    scoring = str(Path(sys.executable).with_name("scoring"))
    demo = subprocess.Popen(
        [scoring, "demo", "--users", "150", "--epochs", "1", "--serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # A demo that neither reaches its waiting point nor exits must not hang the suite.
    watchdog = threading.Timer(600, demo.kill)
    watchdog.start()
    seen = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # ends at the waiting point, or at EOF if the demo exits
            seen.append(line)
            if "Ctrl-C to stop" in line:
                break
        assert seen and "Ctrl-C to stop" in seen[-1], "".join(seen[-30:])
        assert demo.poll() is None, "the demo waits for Ctrl-C"
        assert health_status(f"127.0.0.1:{gateway_port}") == SERVING
        demo.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        rest, _ = demo.communicate(timeout=120)
    finally:
        watchdog.cancel()
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, "".join(seen[-30:]) + rest
    assert "demo done" in rest
    assert port_is_free(triton_port) and port_is_free(gateway_port)
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert not leftovers, f"processes left running: {leftovers}"


def test_the_demo_ranks_running_campaigns_and_shows_two_ended_ones(tmp_path: Path) -> None:
    import pandas as pd

    from scoring.workflows import demo_activities

    (tmp_path / "data").mkdir()
    now = 1_000_000
    pd.DataFrame(
        {
            "activity_id": [f"a_{i:06d}" for i in range(15)] + ["a_000001"],
            "end_ts": [float(now + (100 if i % 3 == 0 else -100)) for i in range(15)]
            + [float(now - 100)],  # a later row of a_000001 (ids repeat, one row per snapshot)
        }
    ).to_parquet(tmp_path / "data" / "activity_stats.parquet")
    picked = demo_activities(tmp_path, now)
    assert picked == ["a_000000", "a_000003", "a_000006", "a_000009", "a_000012"] + [
        "a_000001",
        "a_000002",
    ]
