"""Circuit breakers, one per Triton model: a model that stopped answering costs no caller its
deadline.

A breaker opens after `threshold` consecutive failed inferences (timeouts, Triton unreachable,
a model that errors while Triton calls it READY), or at once when the health loop finds Triton
not ready. While it is open, requests of that model skip Triton and answer with the popularity
fallback (flagged `model_unavailable: circuit open ...`), so a hung server no longer holds every
request for its whole deadline. No caller's request is used to try the model again: the health
loop probes an open model each round with a small inference of its own (its own short timeout)
and closes the breaker when the probe answers. A probe that fails while Triton reports the model
READY means the model's worker is broken (a killed python-backend stub stays "READY" and fails
every request): the health loop then asks Triton to reload that model (see `repair_token`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class CircuitBreaker:
    """Closed (requests go to Triton) or open since `opened_at` for `reason`."""

    threshold: int = 3
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    reason: str = ""
    opened_count: int = 0
    probe_failures: int = 0  # the health loop's probes that failed since it opened

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        """Whether a request may go to the model now."""
        return self.opened_at is None

    def success(self) -> None:
        """An answer from the model: it works, whatever the breaker thought."""
        self.failures = 0
        self.opened_at = None
        self.reason = ""
        self.probe_failures = 0

    def failure(self, reason: str) -> bool:
        """A failed inference; True when this one opened the breaker."""
        self.failures += 1
        if self.opened_at is None and self.failures >= self.threshold:
            self.trip(reason)
            return True
        return False

    def trip(self, reason: str) -> None:
        """Opens the breaker now (the health loop saw Triton down); keeps the first reason."""
        if self.opened_at is None:
            self.opened_at = self.clock()
            self.reason = reason
            self.opened_count += 1

    def open_for_s(self) -> float:
        return 0.0 if self.opened_at is None else self.clock() - self.opened_at


@dataclass
class Breakers:
    """The breakers of every model, created on first use."""

    threshold: int = 3
    clock: Callable[[], float] = time.monotonic
    _by_model: dict[str, CircuitBreaker] = field(default_factory=dict)

    def __getitem__(self, model: str) -> CircuitBreaker:
        breaker = self._by_model.get(model)
        if breaker is None:
            breaker = self._by_model[model] = CircuitBreaker(self.threshold, self.clock)
        return breaker

    def trip_all(self, models: list[str], reason: str) -> list[str]:
        """Opens every breaker of `models`; returns the models whose breaker this opened."""
        opened = [m for m in models if not self[m].is_open]
        for model in models:
            self[model].trip(reason)
        return opened

    def open_models(self) -> list[str]:
        return [m for m, b in self._by_model.items() if b.is_open]

    def states(self) -> dict[str, bool]:
        """Whether each model's breaker is open."""
        return {m: b.is_open for m, b in self._by_model.items()}


def repair_token(config: dict[str, object], token: str) -> dict[str, object]:
    """The model's config (as Triton returns it) with a `repair_token` parameter set.

    Triton reloads a model only when its config or files changed: loading it again unchanged
    returns at once and keeps the broken worker. A new parameter value is a changed config, so
    Triton loads fresh instances beside the old ones and swaps them in ("a reload that
    succeeds replaces the loaded model without loss of availability").
    """
    parameters = dict(config.get("parameters", {}) or {})  # type: ignore[call-overload]
    parameters["repair_token"] = {"string_value": token}
    return {**config, "parameters": parameters}
