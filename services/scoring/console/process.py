"""Runs the console as a child process (tests, the demo) and waits until /healthz answers."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from scoring.core.process import ManagedProcess, ProcessStartError
from scoring.core.settings import Settings, settings_env


class ConsoleStartError(ProcessStartError):
    """The console exited or did not answer in time; the message holds its log tail."""


@dataclass
class ConsoleProcess(ManagedProcess):
    """`scoring console` with `settings` passed as SCORING_* variables."""

    name = "console"
    start_error = ConsoleStartError
    stop_timeout_s = 10.0

    settings: Settings
    log_path: Path
    extra_env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.console.host}:{self.settings.console.port}"

    @property
    def startup_timeout_s(self) -> float:
        return 60.0

    def start(self) -> None:
        env = {**os.environ, **settings_env(self.settings), **(self.extra_env or {})}
        self._spawn([sys.executable, "-m", "scoring.cli", "console"], env, self.log_path)

    def _readiness(self) -> AbstractContextManager[Callable[[], bool]]:
        return nullcontext(self._healthy)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False
