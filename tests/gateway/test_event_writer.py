"""The served-event writer: batched appends, nothing lost on close, torn lines skipped on read."""

from __future__ import annotations

import time
from pathlib import Path

from scoring.core.served_events import FeedbackEvent, read_events
from scoring.gateway.event_writer import ServedEventWriter


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
