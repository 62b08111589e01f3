"""Writes the served-event log (scoring.core.served_events): which arm served each request,
shadow scores, feedback.

The hot path only queues a dict; a writer thread appends batches to the day's file of this
gateway instance and flushes them. A batch is what arrived within `linger_s` of its first event
(at most `batch` events): one file append per batch, not per request, so the writer's syscalls
do not compete with requests on a busy host. A crash loses at most the last batch; a clean
shutdown (`close`) loses nothing. Each append holds the file's lock (`flock`), so that
`scoring privacy forget` can rewrite a file a gateway is appending to; day folders older than
`retention_days` are deleted as days roll over.
"""

from __future__ import annotations

import fcntl
import json
import logging
import queue
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, overload

from scoring.core.privacy import expire
from scoring.core.served_events import FeedbackEvent, Kind, RequestEvent, ShadowEvent, event_file
from scoring.core.writer import BackgroundWriter

logger = logging.getLogger(__name__)


class ServedEventWriter(BackgroundWriter[tuple[Kind, Mapping[str, object]]]):
    """Non-blocking append of served events, written by one background thread."""

    def __init__(
        self,
        directory: Path,
        instance_id: str,
        batch: int = 512,
        linger_s: float = 0.2,
        retention_days: int = 0,
    ) -> None:
        self.instance_id = instance_id
        self.batch = batch
        self.linger_s = linger_s
        self.retention_days = retention_days
        self._expired_on = ""
        self.written = 0
        self.batches = 0
        super().__init__("event-log", directory)

    @overload
    def append(self, kind: Literal["request"], event: RequestEvent) -> bool: ...
    @overload
    def append(self, kind: Literal["shadow"], event: ShadowEvent) -> bool: ...
    @overload
    def append(self, kind: Literal["feedback"], event: FeedbackEvent) -> bool: ...
    def append(self, kind: Kind, event: Mapping[str, object]) -> bool:
        """Queues one event; False once closed. Never blocks."""
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

    def _write(self, events: list[tuple[Kind, Mapping[str, object]]]) -> None:
        self.batches += 1
        now = datetime.now(UTC)
        day = now.strftime("%Y-%m-%d")
        if self.retention_days and self._expired_on != day:
            self._expired_on = day
            for folder in expire(self.directory, self.retention_days, now.date()):
                logger.info("event_log_expired folder=%s", folder)
        by_kind: dict[Kind, list[str]] = defaultdict(list)
        for kind, event in events:
            by_kind[kind].append(json.dumps(event, separators=(",", ":")))
        for kind, lines in by_kind.items():
            path = event_file(self.directory, kind, day, self.instance_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as out:
                fcntl.flock(out, fcntl.LOCK_EX)  # released on close
                out.write("\n".join(lines) + "\n")
                out.flush()
            self.written += len(lines)
