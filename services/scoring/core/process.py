"""Child server processes (Triton, the gateway): started in their own session, waited on until
ready with a deadline, stopped with their whole process group, their log's tail in errors."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self


class ProcessStartError(RuntimeError):
    """A server exited or was not ready in time; the message holds its log tail."""


def stop_group(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> int | None:
    """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code (None: no process).

    The child runs in its own session (`start_new_session=True`), so its process group holds
    its helpers too (Triton's python stubs); whatever of the group outlives it is killed.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.returncode


def log_tail(path: Path | None, lines: int = 30) -> str:
    """The last `lines` lines of a log file ("" when there is none)."""
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ManagedProcess(ABC):
    """A server run as a child process, its output in a log file.

    Subclasses say how to start it (`start`, which calls `_spawn`) and how to tell that it is
    ready (`_readiness`); use as a context manager, or call `start()` / `wait_ready()` /
    `stop()`.
    """

    name: ClassVar[str] = "server"
    start_error: ClassVar[type[ProcessStartError]] = ProcessStartError
    stop_timeout_s: ClassVar[float] = 15.0

    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _log_file: Path | None = field(default=None, init=False, repr=False)

    @abstractmethod
    def start(self) -> None:
        """Starts the process (with `_spawn`)."""

    @property
    @abstractmethod
    def startup_timeout_s(self) -> float:
        """How long `wait_ready` waits by default."""

    @abstractmethod
    def _readiness(self) -> AbstractContextManager[Callable[[], bool]]:
        """A probe that answers whether the server is ready, open while `wait_ready` polls."""

    def _spawn(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        # Own session: stopping it (and its helpers) never touches the caller's group.
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self._log_file = log_path
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self._log_file, lines)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Polls until the server is ready; fails fast if the process exits.

        Raises:
            ProcessStartError: (the subclass's `start_error`) it exited or was not ready within
                `timeout_s` (default: `startup_timeout_s`); the message holds its log's tail.
        """
        assert self.process is not None, "start() first"
        timeout = self.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        with self._readiness() as ready:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise self.start_error(
                        f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                if ready():
                    return
                time.sleep(0.1)
        raise self.start_error(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (a graceful drain), then SIGKILL of its process group after `timeout_s`
        (default: `stop_timeout_s`); returns the exit code."""
        proc, self.process = self.process, None
        rc = stop_group(proc, self.stop_timeout_s if timeout_s is None else timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
