"""Writes the served-event log (scoring.core.served_events): which arm served each request,
shadow scores, feedback.

The hot path only queues a dict; a writer thread appends batches to the day's file of this
gateway instance and flushes them. A batch is what arrived within `linger_s` of its first event
(at most `batch` events): one file append per batch, not per request, so the writer's syscalls
do not compete with requests on a busy host. A crash loses at most the last batch; a clean
shutdown (`close`) loses nothing. Each append holds the file's lock (`flock`), so that
`scoring privacy forget` can rewrite a file a gateway is appending to; day folders older than
`retention_days` are deleted as days roll over.

Memory is bounded: the events held (queued, or kept while a failed write is retried with
backoff) take at most `max_bytes`, as `event_bytes` estimates them; past it an event is not
recorded and counted (`dropped`, by kind and reason), never waited for. A failed append is cut
back off the file, so that its retry leaves no torn line. Events still unwritable
`close_retry_s` into `close` are counted as lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, overload

from scoring.core.served_events import (
    KINDS,
    FeedbackEvent,
    Kind,
    RequestEvent,
    ShadowEvent,
    event_file,
)
from scoring.core.writer import BackgroundWriter

logger = logging.getLogger(__name__)

# Why an event was not written: the memory bound was reached, it could not be written as JSON,
# or its file was still unwritable when the writer closed.
DROP_REASONS = ("queue_full", "unserializable", "write_failed")
# Measured with tracemalloc: a feedback event takes about 350 B, a request event about 900 B
# plus about 20 B per candidate of each list field (ids are shared with the request; scores are
# floats). Rounded up, so that the bound holds.
_EVENT_BYTES = 1024
_LISTED_BYTES = 32

_Queued = tuple[Kind, Mapping[str, object], int]  # kind, event, estimated bytes


def event_bytes(event: Mapping[str, object]) -> int:
    """An upper estimate of the memory `event` holds (a fixed part, plus its list elements)."""
    listed = sum(len(v) for v in event.values() if isinstance(v, list))
    return _EVENT_BYTES + _LISTED_BYTES * listed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_locked(path: Path, data: bytes) -> None:
    """Appends `data` to `path` under the file's lock; a failed append is cut back off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released on close
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            _write_all(fd, data)
        except BaseException:
            # A partial line would glue itself to the retry's first line.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


class ServedEventWriter(BackgroundWriter[_Queued]):
    """Non-blocking append of served events, written by one background thread.

    Args:
        max_bytes: memory the held events (queued, pending or being retried) may take at most,
            as `event_bytes` estimates it.
        retry_s: the first retry's delay after a failed write; it doubles up to `retry_max_s`.
        close_retry_s: how long `close` keeps retrying a failing write before giving up.
    """

    def __init__(
        self,
        directory: Path,
        instance_id: str,
        batch: int = 512,
        linger_s: float = 0.2,
        retention_days: int = 0,
        *,
        max_bytes: int = 64 * 2**20,
        retry_s: float = 0.5,
        retry_max_s: float = 30.0,
        close_retry_s: float = 10.0,
    ) -> None:
        self.instance_id = instance_id
        self.batch = batch
        self.linger_s = linger_s
        self.max_bytes = max_bytes
        self.written = 0
        self.batches = 0
        # Events not written, by (kind, reason): DROP_REASONS.
        self.dropped: dict[tuple[str, str], int] = {(k, r): 0 for k in KINDS for r in DROP_REASONS}
        self._held = 0  # events accepted and not yet written (or given up)
        self._held_bytes = 0
        self._lock = threading.Lock()
        self._dropping = False  # since the bound was reached, until the writer catches up
        self._failing = False  # since a write failed, until one succeeds
        super().__init__(
            "event-log",
            directory,
            retention_days=retention_days,
            retry_s=retry_s,
            retry_max_s=retry_max_s,
            close_retry_s=close_retry_s,
        )

    @property
    def queued(self) -> int:
        """Events accepted and not written yet (queued, or kept for a retry)."""
        return self._held

    @property
    def queued_bytes(self) -> int:
        """The estimated memory of the events accepted and not written yet."""
        return self._held_bytes

    @overload
    def append(self, kind: Literal["request"], event: RequestEvent) -> bool: ...
    @overload
    def append(self, kind: Literal["shadow"], event: ShadowEvent) -> bool: ...
    @overload
    def append(self, kind: Literal["feedback"], event: FeedbackEvent) -> bool: ...
    def append(self, kind: Kind, event: Mapping[str, object]) -> bool:
        """Queues one event if the memory bound allows; False when not (counted) or once
        closed. Never blocks."""
        size = event_bytes(event)
        with self._lock:
            full = self._held_bytes + size > self.max_bytes
            if full:
                self.dropped[(kind, "queue_full")] += 1
            else:
                self._held += 1
                self._held_bytes += size
            warn = full and not self._dropping
            self._dropping |= full
        if warn:
            logger.warning(
                "event_log_full queued=%d queued_bytes=%d max_bytes=%d: events are not "
                "recorded until writes catch up (scoring_events_dropped_total)",
                self._held,
                self._held_bytes,
                self.max_bytes,
            )
        if full:
            return False
        if not self._put((kind, event, size)):
            self._release([(kind, event, size)])
            return False
        return True

    def _release(self, events: list[_Queued]) -> None:
        with self._lock:
            self._held -= len(events)
            self._held_bytes -= sum(size for _, _, size in events)

    def _run(self) -> None:
        pending: list[_Queued] = []
        retry_at: float | None = None  # set while a failed write waits to be retried
        delay = self.retry_s
        self._expire()
        while True:
            stop = self._collect(pending, retry_at)
            now = time.monotonic()
            if pending and (stop or retry_at is None or now >= retry_at):
                pending = self._flush(pending)
                if pending:
                    retry_at, delay = now + delay, min(delay * 2, self.retry_max_s)
                else:
                    retry_at, delay = None, self.retry_s
            if stop:
                self._finish(pending)
                return

    def _collect(self, pending: list[_Queued], retry_at: float | None) -> bool:
        """Moves queued events into `pending`: a batch (what arrives within `linger_s` of the
        first, at most `batch` events), or, while a failed write waits, what arrives until its
        retry (the memory bound caps it). Returns whether `close` was called."""
        if retry_at is None:
            item = self._queue.get()
            if item is None:
                return True
            pending.append(item)
            until, limit = time.monotonic() + self.linger_s, self.batch
        else:
            until, limit = retry_at, None
        while limit is None or len(pending) < limit:
            left = until - time.monotonic()
            try:
                nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is None:
                return True
            pending.append(nxt)
        return False

    def _give_up(self, pending: list[_Queued]) -> None:
        self._drop(pending, "write_failed")
        logger.error("event_log_lost events=%d: %s stayed unwritable", len(pending), self.directory)

    def _drop(self, events: list[_Queued], reason: str) -> None:
        with self._lock:
            for kind, _, _ in events:
                self.dropped[(kind, reason)] += 1
        self._release(events)

    def _flush(self, events: list[_Queued]) -> list[_Queued]:
        """Appends `events` (one append per kind); returns those not written, in order."""
        self.batches += 1
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        by_kind: dict[Kind, list[_Queued]] = {}
        for item in events:
            by_kind.setdefault(item[0], []).append(item)
        left: list[_Queued] = []
        for kind, group in by_kind.items():
            lines: list[str] = []
            good: list[_Queued] = []
            bad: list[_Queued] = []
            for item in group:
                try:
                    lines.append(json.dumps(item[1], separators=(",", ":")))
                    good.append(item)
                except (TypeError, ValueError):
                    bad.append(item)  # never writable: retrying it would hold up the rest
            if bad:
                self._drop(bad, "unserializable")
                logger.error("event_log_unserializable kind=%s events=%d", kind, len(bad))
            if not good:
                continue
            path = event_file(self.directory, kind, day, self.instance_id)
            try:
                append_locked(path, ("\n".join(lines) + "\n").encode())
            except Exception as exc:
                self.write_failures += 1
                self.write_failed.set()
                left.extend(good)
                if not self._failing:  # once per failing episode, not per batch or event
                    self._failing = True
                    logger.warning(
                        "event_log_write_failed path=%s error=%s: events are kept and retried "
                        "(scoring_events_write_failures_total)",
                        path,
                        exc,
                    )
            else:
                self.written += len(good)
                self._release(good)
        if not left:
            if self._failing:
                self._failing = False
                logger.info("event_log_write_recovered failures=%d", self.write_failures)
            if self._dropping and self._held_bytes <= self.max_bytes // 2:
                self._dropping = False
                logger.info("event_log_accepting dropped=%d", self._dropped_total("queue_full"))
        self._expire()
        return left

    def _dropped_total(self, reason: str) -> int:
        return sum(n for (_, r), n in self.dropped.items() if r == reason)
