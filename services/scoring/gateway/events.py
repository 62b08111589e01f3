"""Experiment events as JSON lines: which arm served each request, shadow scores, feedback.

The hot path only queues a dict; a writer thread appends batches to
`<dir>/<kind>/<YYYY-MM-DD>/<instance>.jsonl` and flushes them. A batch is what arrived within
`linger_s` of its first event (at most `batch` events): one file append per batch, not per
request, so the writer's syscalls do not compete with requests on a busy host. A crash loses at
most the last batch; a clean shutdown (`close`) loses nothing. One file per process and day: several
gateways never write into the same file. `scoring experiments report` reads them back.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from scoring.core.writer import BackgroundWriter

logger = logging.getLogger(__name__)
Kind = Literal["request", "shadow", "feedback"]
KINDS: tuple[Kind, ...] = ("request", "shadow", "feedback")


class EventLog(BackgroundWriter[tuple[Kind, dict[str, Any]]]):
    """Non-blocking append of JSON events, written by one background thread."""

    def __init__(
        self, directory: Path, instance_id: str, batch: int = 512, linger_s: float = 0.2
    ) -> None:
        self.directory = directory
        self.instance_id = instance_id
        self.batch = batch
        self.linger_s = linger_s
        self.written = 0
        self.batches = 0
        super().__init__("event-log")

    def append(self, kind: Kind, event: dict[str, Any]) -> bool:
        """Queues one event (it must be JSON-serialisable); False once closed. Never blocks."""
        return self._put((kind, event))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            pending = [] if item is None else [item]
            stop = item is None
            until = time.monotonic() + self.linger_s
            while not stop and len(pending) < self.batch:
                left = until - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                else:
                    pending.append(nxt)
            if pending:
                try:
                    self._write(pending)
                except Exception:
                    logger.exception("event_log_write_failed events=%d", len(pending))
            if stop:
                return

    def _write(self, events: list[tuple[Kind, dict[str, Any]]]) -> None:
        self.batches += 1
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        by_kind: dict[Kind, list[str]] = defaultdict(list)
        for kind, event in events:
            by_kind[kind].append(json.dumps(event, separators=(",", ":")))
        for kind, lines in by_kind.items():
            folder = self.directory / kind / day
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"{self.instance_id}.jsonl").open("a") as out:
                out.write("\n".join(lines) + "\n")
                out.flush()
            self.written += len(lines)


def read_events(directory: Path, kind: Kind) -> list[dict[str, Any]]:
    """Every event of `kind` under `directory` (all instances and days); a torn last line of a
    file that is being written is skipped."""
    events: list[dict[str, Any]] = []
    for path in sorted((directory / kind).glob("*/*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events
