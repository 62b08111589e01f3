"""A queue drained by one background thread: what the hot path hands to the disk."""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Generic, TypeVar

from scoring.core.privacy import expire

T = TypeVar("T")
logger = logging.getLogger(__name__)


class BackgroundWriter(Generic[T]):
    """Non-blocking `_put`, one writer thread running `_run`, complete drain on `close`.

    Subclasses set their own attributes before calling `__init__` (it starts the thread) and
    implement `_run`, which reads `self._queue` until it gets None, writing what came before
    into files under `self.directory` with `_flush` (which returns what it could not write, to
    retry with a backoff from `retry_s` doubling up to `retry_max_s`), then hands what is left
    to `_finish`.

    Args:
        retention_days: day folders older than this are deleted as days roll over (0: kept).
        close_retry_s: how long `close` keeps retrying a failing write before giving up.
    """

    def __init__(
        self,
        name: str,
        directory: Path,
        *,
        retention_days: int = 0,
        retry_s: float = 0.5,
        retry_max_s: float = 30.0,
        close_retry_s: float = 10.0,
    ) -> None:
        self.directory = directory
        self.retention_days = retention_days
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.close_retry_s = close_retry_s
        self.write_failures = 0
        self.write_failed = threading.Event()  # set by the first failed write (tests, health)
        self._log_name = name.replace("-", "_")
        self._expired_on: date | None = None
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: T) -> bool:
        """Queues `item`; False once closed. Never blocks."""
        if self._closed:
            return False
        self._queue.put(item)
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Writes everything queued, then stops the writer."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        raise NotImplementedError

    def _flush(self, pending: list[T]) -> list[T]:
        """Writes `pending`; returns what could not be written (kept for a retry)."""
        raise NotImplementedError

    def _give_up(self, pending: list[T]) -> None:
        """Counts and logs what stayed unwritable through `close`."""
        raise NotImplementedError

    def _finish(self, pending: list[T]) -> None:
        """On close: keeps retrying what is still unwritten for `close_retry_s`, then gives up
        on it (`_give_up`)."""
        give_up = time.monotonic() + self.close_retry_s
        delay = self.retry_s
        while pending and time.monotonic() < give_up:
            time.sleep(min(delay, max(give_up - time.monotonic(), 0)))
            pending = self._flush(pending)
            delay = min(delay * 2, self.retry_max_s)
        if pending:
            self._give_up(pending)

    def _expire(self) -> None:
        """Deletes the day folders past the retention, once a day (as days roll over)."""
        today = datetime.now(UTC).date()
        if not self.retention_days or self._expired_on == today:
            return
        try:
            for folder in expire(self.directory, self.retention_days, today):
                logger.info("%s_expired folder=%s", self._log_name, folder)
            self._expired_on = today
        except OSError:
            logger.exception("%s_expire_failed", self._log_name)
