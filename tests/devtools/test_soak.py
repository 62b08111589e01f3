"""The soak run's sampler and bounds, on this process and synthetic series (no servers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from scoring.devtools.soak import (
    Bound,
    describe_measured,
    fd_kinds,
    judge,
    parse_metrics,
    sample_process,
)
from scoring.gateway.event_writer import ServedEventWriter
from scoring.gateway.prometheus import GatewayMetrics


def test_a_process_sample_sees_an_opened_file_and_a_started_thread(tmp_path: Path) -> None:
    def opened_and_started() -> tuple[int, int]:
        before = sample_process(os.getpid())
        release = threading.Event()
        thread = threading.Thread(target=release.wait)
        thread.start()
        with (tmp_path / "f").open("w"):
            after = sample_process(os.getpid())
        release.set()
        thread.join()
        return after.fds - before.fds, after.threads - before.threads

    # A thread or file of an earlier test may end between the two samples: try a few times.
    deltas = [opened_and_started() for _ in range(5)]
    assert (1, 1) in deltas, deltas
    sample = sample_process(os.getpid())
    assert sample.rss_bytes > 10 * 2**20 and sample.threads >= 1 and sample.fds >= 3
    spin = time.process_time() + 0.3
    while time.process_time() < spin:
        pass
    assert sample_process(os.getpid()).cpu_s >= sample.cpu_s + 0.25


def test_a_tree_sample_adds_the_children() -> None:
    # Servers that session fixtures started earlier (Triton, a gateway) are children too.
    before = sample_process(os.getpid(), tree=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alone = sample_process(os.getpid())
        tree = sample_process(os.getpid(), tree=True)
        assert alone.processes == 1
        assert tree.processes == before.processes + 1
        assert tree.rss_bytes > alone.rss_bytes and tree.threads > alone.threads
    finally:
        child.kill()
        child.wait()
    with pytest.raises(ProcessLookupError):
        sample_process(child.pid)


def test_the_gateway_queue_gauges_are_read_from_its_metrics_text(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    events = ServedEventWriter(tmp_path, "gw-1", max_bytes=1)  # every event is refused
    metrics.track_events(events)
    events.append("feedback", {"request_id": "r", "candidate_id": "a", "type": "click", "at": 1})
    events.append("request", {"request_id": "r"})  # type: ignore[call-overload]
    events.close()
    values = parse_metrics(generate_latest(metrics.registry).decode())
    assert values["scoring_events_queued"] == 0
    assert values["scoring_events_dropped_total"] == 2  # summed over kinds and reasons


def series(column: str, values: list[float]) -> list[dict[str, float]]:
    return [{column: v} for v in values]


def test_growth_past_the_bound_fails_and_within_it_passes() -> None:
    rss = Bound("gateway RSS", "rss", "growth", 64, relative=0.10, unit="MiB")
    # 10% of 1000 MiB (100) is more than 64 MiB: the larger allowance applies.
    (ok,) = judge(series("rss", [1000, 1040, 1090]), [rss])
    assert ok.ok and ok.measured == 90 and ok.status == "PASS"
    (grown,) = judge(series("rss", [1000, 1050, 1101]), [rss])
    assert not grown.ok and grown.status == "FAIL"
    assert describe_measured(grown) == "+101 MiB (+10.1%)"
    (small,) = judge(series("rss", [200, 300, 265]), [rss])  # 64 MiB > 10% of 200
    assert not small.ok and small.measured == 65
    fds = Bound("gateway fds", "fds", "growth", 0)
    assert [v.ok for v in judge(series("fds", [40, 45, 40]), [fds])] == [True]
    assert [v.ok for v in judge(series("fds", [40, 40, 41]), [fds])] == [False]


def test_max_min_and_sum_bounds() -> None:
    samples = [
        {"queue": 10, "rate": 49.5, "failed": 0},
        {"queue": 30, "rate": 50.0, "failed": 0},
        {"queue": 5, "rate": 44.0, "failed": 1},
    ]
    verdicts = judge(
        samples,
        [
            Bound("queue", "queue", "max", 30),
            Bound("rate", "rate", "min", 45),
            Bound("failed", "failed", "sum", 0),
        ],
    )
    assert [(v.measured, v.ok) for v in verdicts] == [(30, True), (44, False), (1, False)]
    assert judge(samples, [Bound("queue", "queue", "max", 29)])[0].status == "FAIL"


def test_judging_nothing_or_an_unknown_column_is_an_error() -> None:
    with pytest.raises(ValueError, match="warm-up"):
        judge([], [Bound("x", "x", "max", 1)])
    with pytest.raises(ValueError, match="no column 'y'"):
        judge([{"x": 1}], [Bound("y", "y", "max", 1)])


def test_descriptors_are_told_apart_by_what_they_point_at() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)), server.accept()[0]:
            kinds = fd_kinds(os.getpid())
    assert kinds[f"tcp :{port}"] == 1  # listening
    assert kinds[f"tcp ->:{port}"] == 1  # the client's end
