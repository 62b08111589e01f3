"""What every console route reads: the settings, the registry, the Feast store, the templates,
the logins, and the errors routes raise for bad input."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from scoring.console.errors import ConsoleError
from scoring.core.settings import Settings

if TYPE_CHECKING:
    from scoring.console.auth import Sessions
    from scoring.registry import Registry

HERE = Path(__file__).parent
# The Feast registry is read again at most this often (a feature engineer's `feast apply`
# shows within seconds; a page load does not parse it every time).
FEAST_REFRESH_S = 5.0


def fmt_number(value: Any, digits: int = 4) -> str:
    """A metric for a page: '-' for a missing one."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def templates() -> Jinja2Templates:
    env = Jinja2Templates(directory=str(HERE / "templates"))
    env.env.filters["num"] = fmt_number
    return env


@dataclass
class ConsoleContext:
    """One per console process (app.state.ctx).

    Attributes:
        registry: the model registry the CLI and the gateways use.
        sessions: the logins (scoring.console.auth).
        templates: the Jinja2 pages under console/templates.
        extras: per-area state the routers keep (the Serving page's sampler), by name.
    """

    settings: Settings
    registry: Registry
    sessions: Sessions
    templates: Jinja2Templates
    extras: dict[str, Any] = field(default_factory=dict)
    _store: Any = None
    _store_read: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def feature_store(self) -> Any:
        """The configured `feast.FeatureStore`, its registry re-read every FEAST_REFRESH_S.

        Raises:
            ConsoleError: 503 when there is no feature repository.
        """
        from scoring.workflows import WorkflowError, open_feature_store

        with self._lock:
            now = time.monotonic()
            if self._store is None:
                try:
                    self._store = open_feature_store(self.settings)
                except WorkflowError as exc:
                    raise ConsoleError(503, str(exc)) from None
                self._store_read = now
            elif now - self._store_read > FEAST_REFRESH_S:
                self._store.refresh_registry()
                self._store_read = now
            return self._store


def get_context(request: Request) -> ConsoleContext:
    """FastAPI dependency: the console's context."""
    ctx: ConsoleContext = request.app.state.ctx
    return ctx


__all__ = [
    "HERE",
    "ConsoleContext",
    "ConsoleError",
    "fmt_number",
    "get_context",
    "templates",
]
