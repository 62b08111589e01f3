"""The served-event writer: batched appends, nothing lost on close, torn lines skipped on read,
a memory bound that drops visibly, failed writes kept and retried."""

from __future__ import annotations

import errno
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from scoring.core.served_events import FeedbackEvent, read_events
from scoring.gateway import event_writer
from scoring.gateway.event_writer import ServedEventWriter, event_bytes
from scoring.gateway.prometheus import GatewayMetrics


def click(i: int) -> FeedbackEvent:
    return {"request_id": f"r{i}", "candidate_id": "a", "type": "click", "at": float(i)}


def test_event_log_keeps_everything_across_close_and_skips_torn_lines(tmp_path: Path) -> None:
    log = ServedEventWriter(tmp_path, "gw-1", batch=7)
    for i in range(1000):
        assert log.append("feedback", click(i))
    log.close()
    assert not log.append("feedback", click(-1))
    events = read_events(tmp_path, "feedback")
    assert events == [click(i) for i in range(1000)]
    (path,) = (tmp_path / "feedback").glob("*/gw-1.jsonl")
    with path.open("a") as f:
        f.write('{"request_id": "r10"')  # a writer crashed mid-line
    assert len(read_events(tmp_path, "feedback")) == 1000


def test_event_log_writes_a_burst_as_one_batch_without_waiting_for_close(tmp_path: Path) -> None:
    # A batch ends at `batch` events or `linger_s` after its first: here the count ends it.
    log = ServedEventWriter(tmp_path, "gw-1", batch=20, linger_s=60)
    for i in range(20):
        log.append("feedback", click(i))
    deadline = time.monotonic() + 10
    while len(read_events(tmp_path, "feedback")) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert read_events(tmp_path, "feedback") == [click(i) for i in range(20)]
    assert log.batches == 1  # one append for the burst, not one per event
    log.close()


def test_event_day_folders_past_the_retention_are_deleted(tmp_path: Path) -> None:
    old = tmp_path / "feedback" / "2001-01-01"
    old.mkdir(parents=True)
    (old / "gw-0.jsonl").write_text("{}\n")
    log = ServedEventWriter(tmp_path, "gw-1", retention_days=30)
    log.append("feedback", click(1))
    log.close()
    assert not old.exists()
    assert read_events(tmp_path, "feedback") == [click(1)]


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_bound_drops_visibly_and_failed_writes_are_retried_until_they_heal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=event_writer.__name__)
    directory = tmp_path / "events"
    directory.write_text("a file where the log's folder should be: every append fails")
    log = ServedEventWriter(
        directory, "gw-1", linger_s=0.01, max_bytes=3 * event_bytes(click(0)),
        retry_s=0.01, retry_max_s=0.05,
    )  # fmt: skip
    metrics = GatewayMetrics()
    metrics.track_events(log)
    # Nothing can be written, so the bound holds 3 events; the rest are refused at once and
    # counted, never waited for.
    assert [log.append("feedback", click(i)) for i in range(5)] == [True] * 3 + [False] * 2
    wait_for(lambda: log.write_failures >= 3)  # retried, with backoff
    assert (log.queued, log.written) == (3, 0)
    assert log.dropped[("feedback", "queue_full")] == 2
    scraped = generate_latest(metrics.registry).decode()
    assert 'scoring_events_dropped_total{kind="feedback",reason="queue_full"} 2.0' in scraped
    assert "scoring_events_queued 3.0" in scraped
    assert f"scoring_events_queued_bytes {3.0 * event_bytes(click(0))}" in scraped

    directory.unlink()  # the disk is back
    wait_for(lambda: log.written == 3)
    assert log.queued == log.queued_bytes == 0
    assert log.append("feedback", click(5)), "room again once written"
    log.close()
    assert read_events(directory, "feedback") == [click(i) for i in (0, 1, 2, 5)]
    assert sum(n for (_, reason), n in log.dropped.items() if reason != "queue_full") == 0
    # One line per change of state, not one per failed retry or refused event.
    messages = [r.getMessage().split(" ")[0] for r in caplog.records]
    assert messages.count("event_log_write_failed") == 1
    assert messages.count("event_log_full") == 1
    assert messages.count("event_log_write_recovered") == 1


def test_a_failed_append_leaves_no_torn_line_and_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = event_writer._write_all
    failures = [1]

    def disk_full_once(fd: int, data: bytes) -> None:
        if failures[0]:
            failures[0] -= 1
            real(fd, data[: len(data) // 2])  # half a batch reached the file
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(event_writer, "_write_all", disk_full_once)
    log = ServedEventWriter(tmp_path, "gw-1", batch=1000, linger_s=0.05, retry_s=0.01)
    for i in range(50):
        log.append("feedback", click(i))
    wait_for(log.write_failed.is_set)
    log.close()
    (path,) = (tmp_path / "feedback").glob("*/gw-1.jsonl")
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [click(i) for i in range(50)]
    assert log.write_failures == 1 and log.written == 50


def test_close_flushes_what_waits_and_counts_what_stays_unwritable(tmp_path: Path) -> None:
    log = ServedEventWriter(tmp_path / "ok", "gw-1", batch=10_000, linger_s=3600)
    for i in range(100):
        log.append("feedback", click(i))
    log.close()  # long before the batch's linger ends
    assert read_events(tmp_path / "ok", "feedback") == [click(i) for i in range(100)]

    broken = tmp_path / "broken"
    broken.write_text("never a folder")
    log = ServedEventWriter(broken, "gw-1", retry_s=0.01, close_retry_s=0.05)
    log.append("feedback", click(1))
    log.close()
    assert log.dropped[("feedback", "write_failed")] == 1
    assert log.queued == log.queued_bytes == 0


def test_an_unserializable_event_is_dropped_not_retried_forever(tmp_path: Path) -> None:
    log = ServedEventWriter(tmp_path, "gw-1", linger_s=0.01)
    bad = {**click(1), "at": object()}
    log.append("feedback", bad)  # type: ignore[call-overload]
    log.append("feedback", click(2))
    log.close()
    assert read_events(tmp_path, "feedback") == [click(2)]
    assert log.dropped[("feedback", "unserializable")] == 1 and log.queued == 0
