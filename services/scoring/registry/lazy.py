"""The registry as a gateway's routing source: connected (and migrated) on first use."""

from __future__ import annotations

from typing import Any

from scoring.core.closeable import Closeable
from scoring.registry.store import Registry
from scoring.registry.types import Routing


class LazyRegistry(Closeable):
    """A `RoutingSource` on the registry at `url`, connected on its first read: a gateway
    starts even while the registry's database is down, and reports NOT_SERVING until it could
    read it once."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._registry: Registry | None = None

    def _get(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.url)
        return self._registry

    def revision(self) -> int:
        return self._get().revision()

    def routing(self) -> Routing:
        return self._get().routing()

    def heartbeat(self, instance_id: str, revision: int, detail: dict[str, Any] | None) -> None:
        self._get().heartbeat(instance_id, revision, detail)

    def forget_instance(self, instance_id: str) -> None:
        if self._registry is not None:
            self._registry.forget_instance(instance_id)

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
