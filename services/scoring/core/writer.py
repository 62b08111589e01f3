"""A queue drained by one background thread: what the hot path hands to the disk."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class BackgroundWriter(Generic[T]):
    """Non-blocking `_put`, one writer thread running `_run`, complete drain on `close`.

    Subclasses set their own attributes before calling `__init__` (it starts the thread) and
    implement `_run`, which reads `self._queue` until it gets None, writing what came before
    into files under `self.directory`.
    """

    def __init__(self, name: str, directory: Path) -> None:
        self.directory = directory
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
