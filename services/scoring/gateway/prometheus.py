"""Prometheus metrics of the gateway (per-stage latency, errors by code, cache, degradation)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from scoring.core.contract import FeatureContract

# From 0.25 ms to 2.5 s: the hot path lives in the low milliseconds.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# The labels of the per-arm metrics: a served request's target and experiment arm.
ARM_LABELS = ("target", "arm")


class GatewayMetrics:
    """All gateway metrics, registered in one registry (a fresh one per gateway in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        counter = partial(Counter, registry=self.registry)
        histogram = partial(Histogram, registry=self.registry)
        latency = partial(histogram, buckets=LATENCY_BUCKETS)
        self.stage_latency = latency(
            "scoring_stage_latency_seconds",
            "Latency of each request stage: features, assembly, inference, postprocess, total.",
            ["stage", "target"],
        )
        self.requests = counter(
            "scoring_requests", "Finished RPCs by method and gRPC status code.", ["method", "code"]
        )
        self.candidates = histogram(
            "scoring_candidates_per_request",
            "Candidates per Rank request.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
        )
        self.degraded = counter(
            "scoring_degraded",
            "Answers that are not the model's normal one, by reason.",
            ["reason"],
        )
        self.arm_requests = counter(
            "scoring_arm_requests",
            "Rank requests by experiment arm (production, canary, unmanaged, fallback) and the "
            "model version that scored them.",
            ["target", "arm", "version"],
        )
        self.arm_latency = latency(
            "scoring_arm_latency_seconds", "End-to-end Rank latency by experiment arm.", ARM_LABELS
        )
        self.arm_top_score = histogram(
            "scoring_arm_top_score",
            "Score of the first-ranked candidate by experiment arm (score distribution).",
            ARM_LABELS,
            buckets=(0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        )
        self.shadow = counter(
            "scoring_shadow",
            "Shadow scoring calls by outcome (scored, failed, skipped when too many in flight).",
            ["target", "outcome"],
        )
        self.feedback = counter(
            "scoring_feedback_events",
            "Feedback events accepted, by type (click, purchase).",
            ["type"],
        )
        self.feedback_unmatched = counter(
            "scoring_feedback_unmatched",
            "Feedback events accepted for a request id this gateway has not served (lately): "
            "served by another replica or an earlier run, or not a Rank answer's id.",
            ["type"],
        )
        self.breaker_trips = counter(
            "scoring_breaker_trips",
            "Circuit breaker openings per model, by cause (failures in a row, triton not ready).",
            ["model", "cause"],
        )
        self.triton_repairs = counter(
            "scoring_triton_repairs",
            "Reloads the gateway asked of Triton for a model failing while READY, by outcome.",
            ["model", "outcome"],
        )
        self.feature_log_rows = counter(
            "scoring_feature_log_rows",
            "Served candidate rows written to the served-feature log.",
        )
        self.auth_rejected = counter(
            "scoring_auth_rejected",
            "Calls refused by the access check, by reason (unauthenticated, permission_denied, "
            "concurrency, rate) and caller (unknown when not authenticated).",
            ["reason", "caller"],
        )
        self.assembled_rows = counter(
            "scoring_assembled_rows",
            "Candidate rows assembled into a model input, by feature service.",
            ["service"],
        )
        self.feature_defaulted_rows = counter(
            "scoring_feature_defaulted_rows",
            "Candidate rows whose feature value was missing (unknown entity, expired, null, or "
            "no read) and the declared default was served, by feature service and feature ref "
            "(`<view>__<feature>`; a vector feature counts a row once). Divided by "
            "scoring_assembled_rows: the share of rows answered with the default.",
            ["service", "feature"],
        )
        # (service, schema hash) -> its rows counter and one defaults counter per feature,
        # in contract order: labels are resolved once per contract, not per request.
        self._default_children: dict[tuple[str, str], tuple[Counter, list[Counter]]] = {}

    def count_defaults(self, contract: FeatureContract, indicators: np.ndarray) -> None:
        """Counts a request's candidate rows and, per feature, the rows that got its default.

        Args:
            contract: the feature contract the rows were assembled with.
            indicators: [rows, features] bool, the assembly's per-feature missing flags.
        """
        rows = int(indicators.shape[0])
        if not rows:
            return
        key = (contract.service, contract.schema_hash)
        children = self._default_children.get(key)
        if children is None:
            children = (
                self.assembled_rows.labels(contract.service),
                [self.feature_defaulted_rows.labels(contract.service, r) for r in contract.refs],
            )
            self._default_children[key] = children
        total, per_feature = children
        total.inc(rows)
        counts = np.count_nonzero(indicators, axis=0)
        for i in np.flatnonzero(counts).tolist():
            per_feature[i].inc(int(counts[i]))

    def track_cache(self, cache: CacheStats) -> None:
        """Exposes a feature cache's hit and miss counts and size (read at scrape time)."""
        self.registry.register(_CacheCollector(cache))

    def track_feature_log(self, log: FeatureLogStats) -> None:
        """Exposes the served-feature log's held, dropped and lost rows (read at scrape time)."""
        self.registry.register(_FeatureLogCollector(log))

    def track_events(self, events: EventLogStats) -> None:
        """Exposes the served-event writer's written, dropped and queued events (read at
        scrape time)."""
        self.registry.register(_EventLogCollector(events))

    def track_breakers(self, breakers: BreakerStates) -> None:
        """Exposes which models' circuit breakers are open (read at scrape time)."""
        self.registry.register(_BreakerCollector(breakers))

    def serve(self, host: str, port: int) -> None:
        """Exposes /metrics over HTTP (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)


class CacheStats(Protocol):
    hits: int
    misses: int

    def __len__(self) -> int: ...


class BreakerStates(Protocol):
    def states(self) -> dict[str, bool]: ...


class _BreakerCollector(Collector):
    def __init__(self, breakers: BreakerStates) -> None:
        self.breakers = breakers

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "scoring_breaker_open",
            "1 while a model's circuit breaker is open (requests get the fallback).",
            labels=["model"],
        )
        for model, is_open in self.breakers.states().items():
            family.add_metric([model], float(is_open))
        yield family


class _CacheCollector(Collector):
    def __init__(self, cache: CacheStats) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "scoring_feature_cache_hits",
            "Candidate feature rows served from the in-process cache.",
            value=self.cache.hits,
        )
        yield CounterMetricFamily(
            "scoring_feature_cache_misses",
            "Candidate feature rows read from the online store.",
            value=self.cache.misses,
        )
        yield GaugeMetricFamily(
            "scoring_feature_cache_rows", "Rows held by the feature cache.", value=len(self.cache)
        )


class FeatureLogStats(Protocol):
    dropped_rows: int
    lost_rows: int
    write_failures: int

    @property
    def pending_rows(self) -> int: ...


class _FeatureLogCollector(Collector):
    def __init__(self, log: FeatureLogStats) -> None:
        self.log = log

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "scoring_feature_log_dropped_rows",
            "Served candidate rows not in the served-feature log: queue_full (the memory bound "
            "was reached), write_failed (still unwritable at shutdown).",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], self.log.dropped_rows)
        dropped.add_metric(["write_failed"], self.log.lost_rows)
        yield dropped
        yield CounterMetricFamily(
            "scoring_feature_log_write_failures",
            "Failed served-feature log writes (their rows are kept and retried).",
            value=self.log.write_failures,
        )
        yield GaugeMetricFamily(
            "scoring_feature_log_pending_rows",
            "Served candidate rows accepted and not yet written.",
            value=self.log.pending_rows,
        )


class EventLogStats(Protocol):
    written: int
    write_failures: int
    dropped: dict[tuple[str, str], int]

    @property
    def queued(self) -> int: ...

    @property
    def queued_bytes(self) -> int: ...


class _EventLogCollector(Collector):
    def __init__(self, events: EventLogStats) -> None:
        self.events = events

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "scoring_events_written",
            "Served events (request, shadow, feedback) written to the event log.",
            value=self.events.written,
        )
        dropped = CounterMetricFamily(
            "scoring_events_dropped",
            "Served events not in the event log, by kind and reason: queue_full (the memory "
            "bound was reached), unserializable, write_failed (still unwritable at shutdown).",
            labels=["kind", "reason"],
        )
        for (kind, reason), count in sorted(self.events.dropped.items()):
            dropped.add_metric([kind, reason], count)
        yield dropped
        yield CounterMetricFamily(
            "scoring_events_write_failures",
            "Failed event log appends (their events are kept and retried).",
            value=self.events.write_failures,
        )
        yield GaugeMetricFamily(
            "scoring_events_queued",
            "Served events accepted and not yet written (queued, or kept for a retry).",
            value=self.events.queued,
        )
        yield GaugeMetricFamily(
            "scoring_events_queued_bytes",
            "Estimated memory of the served events accepted and not yet written.",
            value=self.events.queued_bytes,
        )
