"""The console's Serving area: live request rate, p50/p99 by stage, errors per gRPC code and
degradations per reason from the gateways' Prometheus metrics (two samples of the console's
sampler), the Triton models loaded, and the gateways' heartbeats with the routing revision
each has applied.

The metrics come from `settings.console.metrics_urls`, or, when that is empty, from the URL
each live gateway's heartbeat advertises (`metrics_url`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from pydantic import BaseModel

from scoring.console.auth import Login, current_login
from scoring.console.charts import Series, line_chart
from scoring.console.context import ConsoleContext, get_context
from scoring.console.sampler import (
    EndpointState,
    Sampler,
    Scrape,
    ScrapeError,
    bucket_deltas,
    deltas,
    merge_buckets,
    quantile,
    scrape,
    window,
)
from scoring.core.json_safe import finite

__all__ = [
    "Sampler",
    "Scrape",
    "ScrapeError",
    "ServingStatus",
    "latest",
    "router",
    "scrape",
    "serving_status",
]

router = APIRouter()
EXTRA = "serving"
REQUESTS = "scoring_requests_total"
LATENCY = "scoring_stage_latency_seconds"
DEGRADED = "scoring_degraded_total"
BREAKER_OPEN = "scoring_breaker_open"
CACHE_HITS, CACHE_MISSES = "scoring_feature_cache_hits_total", "scoring_feature_cache_misses_total"
# The gateway's request stages, in the order a request goes through them.
STAGES = ("features", "assembly", "inference", "postprocess", "total")
ALL = "*"
TRITON_TIMEOUT_S = 2.0


class Window(BaseModel):
    """What the figures are over.

    Attributes:
        kind: "window": between two samples of each gateway, `seconds` apart (rates per
            second); "cumulative": since each gateway started (one sample so far: no rate);
            "none": no sample of any gateway.
        gateways: the gateways (metrics URLs) whose last scrape succeeded: the figures' sources.
    """

    kind: Literal["window", "cumulative", "none"]
    seconds: float | None
    gateways: int


class RequestRate(BaseModel):
    """Finished RPCs of one method with one gRPC status code."""

    method: str
    code: str
    count: float
    per_s: float | None


class StageLatency(BaseModel):
    """Latency of one request stage (target "*": every target) over the window."""

    stage: str
    target: str
    count: float
    p50_ms: float | None
    p99_ms: float | None


class Count(BaseModel):
    """Events of one kind (a gRPC code, a degradation reason): in the window and in all."""

    key: str
    count: float
    total: float


class Endpoint(BaseModel):
    """One metrics URL and how its scrapes go."""

    url: str
    ok: bool
    samples: int
    last_sample_at: datetime | None
    age_s: float | None
    error: str | None


class SeriesOut(BaseModel):
    """One line of a chart: (Unix seconds, value) points, None where there is no value."""

    name: str
    points: list[tuple[float, float | None]]


class TritonModel(BaseModel):
    name: str
    version: str
    state: str
    reason: str


class TritonState(BaseModel):
    """Triton's readiness and its model repository index (every version it knows)."""

    url: str
    reachable: bool
    ready: bool
    error: str | None
    models: list[TritonModel]


class ServedVersions(BaseModel):
    """What a gateway routes one target to ("" production: Triton's own choice)."""

    production: str
    canary: str | None
    shadow: str | None


class GatewayState(BaseModel):
    """A gateway's last heartbeat."""

    instance_id: str
    address: str | None
    metrics_url: str | None
    pid: int | None
    started_at: str | None
    heartbeat_at: datetime
    age_s: float
    live: bool
    revision: int
    behind: bool | None
    serving: dict[str, ServedVersions]


class ServingStatus(BaseModel):
    """Everything the Serving page shows."""

    at: datetime
    window: Window
    metrics_source: Literal["settings", "heartbeats"]
    metrics_source_error: str | None
    scrape_interval_s: float
    request_rate_per_s: float | None
    requests: list[RequestRate]
    errors: list[Count]
    degraded: list[Count]
    latency: list[StageLatency]
    breakers_open: list[str]
    feature_cache_hit_rate: float | None
    feature_cache_lookups: float
    rate_series: list[SeriesOut]
    p99_series: list[SeriesOut]
    endpoints: list[Endpoint]
    triton: TritonState
    registry_revision: int | None
    registry_error: str | None
    heartbeat_max_age_s: float
    gateways: list[GatewayState]


# --- the sampler ---------------------------------------------------------------------------


def metrics_urls(ctx: ConsoleContext) -> list[str]:
    """The configured metrics URLs, or else those the live gateways' heartbeats advertise."""
    if ctx.settings.console.metrics_urls:
        return list(ctx.settings.console.metrics_urls)
    live = ctx.registry.instances(ctx.settings.registry.heartbeat_max_age_s)
    urls = [(i.detail or {}).get("metrics_url") for i in live]
    return sorted({u for u in urls if isinstance(u, str) and u})


def on_start(ctx: ConsoleContext) -> None:
    """Starts the sampler (a daemon thread; its first round at once)."""
    sampler = Sampler(lambda: metrics_urls(ctx), ctx.settings.console.scrape_interval_s)
    ctx.extras[EXTRA] = sampler
    sampler.start()


def on_stop(ctx: ConsoleContext) -> None:
    sampler = ctx.extras.pop(EXTRA, None)
    if isinstance(sampler, Sampler):
        sampler.stop()


def sampler_of(ctx: ConsoleContext) -> Sampler | None:
    sampler = ctx.extras.get(EXTRA)
    return sampler if isinstance(sampler, Sampler) else None


def latest(ctx: ConsoleContext) -> list[Scrape]:
    """The newest scrape of every gateway whose last scrape succeeded (the sampler's; a scrape
    of each URL now when no sampler runs). For pages that read counters (the Features page's
    per-feature defaults): `s.by("scoring_...", ["feature"])`."""
    sampler = sampler_of(ctx)
    if sampler is not None:
        return sampler.latest()
    out: list[Scrape] = []
    try:
        urls = metrics_urls(ctx)
    except Exception:  # the registry unreadable: no gateway to find
        return out
    for url in urls:
        try:
            out.append(scrape(url))
        except ScrapeError:
            continue
    return out


# --- the figures ---------------------------------------------------------------------------


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _counts(
    pairs: Sequence[tuple[Scrape | None, Scrape]], name: str, labels: Sequence[str]
) -> list[Count]:
    window_counts: dict[tuple[str, ...], float] = {}
    totals: dict[tuple[str, ...], float] = {}
    for old, new in pairs:
        for key, value in deltas(old, new, name, labels).items():
            window_counts[key] = window_counts.get(key, 0.0) + value
        for key, value in new.by(name, labels).items():
            totals[key] = totals.get(key, 0.0) + value
    return [
        Count(key="/".join(key), count=window_counts.get(key, 0.0), total=total)
        for key, total in sorted(totals.items())
    ]


def _latency(pairs: Sequence[tuple[Scrape | None, Scrape]]) -> list[StageLatency]:
    per_key: dict[tuple[str, str], list[dict[float, float]]] = {}
    for old, new in pairs:
        for (stage, target), buckets in bucket_deltas(
            old, new, LATENCY, ["stage", "target"]
        ).items():
            per_key.setdefault((stage, target), []).append(buckets)
            per_key.setdefault((stage, ALL), []).append(buckets)
    order = {s: i for i, s in enumerate(STAGES)}
    rows = []
    for (stage, target), parts in sorted(
        per_key.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][0], kv[0][1] != ALL, kv[0])
    ):
        buckets = merge_buckets(parts)
        rows.append(
            StageLatency(
                stage=stage,
                target=target,
                count=buckets.get(math.inf, 0.0),
                p50_ms=_ms(quantile(0.5, buckets)),
                p99_ms=_ms(quantile(0.99, buckets)),
            )
        )
    return rows


def _series(endpoints: Sequence[EndpointState]) -> tuple[list[SeriesOut], list[SeriesOut]]:
    """Per gateway: RPC/s and the p99 of stage `total` between each two successive scrapes."""
    rates, p99s = [], []
    for endpoint in endpoints:
        name = urlsplit(endpoint.url).netloc or endpoint.url
        rate: list[tuple[float, float | None]] = []
        p99: list[tuple[float, float | None]] = []
        ring = endpoint.ring
        for old, new in zip(ring, ring[1:], strict=False):
            seconds = new.at - old.at
            if seconds <= 0:
                continue
            count = sum(deltas(old, new, REQUESTS, ["method"]).values())
            rate.append((new.at, count / seconds))
            buckets = merge_buckets(
                list(bucket_deltas(old, new, LATENCY, ["target"], stage="total").values())
            )
            p99.append((new.at, _ms(quantile(0.99, buckets))))
        if rate:
            rates.append(SeriesOut(name=name, points=rate))
            p99s.append(SeriesOut(name=name, points=p99))
    return rates, p99s


def metric_figures(endpoints: Sequence[EndpointState]) -> dict[str, Any]:
    """The ServingStatus fields that come from the gateways' metrics."""
    fresh = [e for e in endpoints if e.error is None and e.ring]
    pairs: list[tuple[Scrape | None, Scrape]] = [window(e.ring) for e in fresh]
    if pairs and all(old is not None for old, _ in pairs):
        seconds = max(new.at - old.at for old, new in pairs if old is not None)
        kind: Literal["window", "cumulative", "none"] = "window"
    else:
        # Some gateway has one sample only: everything since each gateway started.
        pairs = [(None, new) for _, new in pairs]
        seconds, kind = None, "cumulative" if pairs else "none"
    requests: dict[tuple[str, ...], tuple[float, float]] = {}
    for old, new in pairs:
        elapsed = new.at - old.at if old is not None else 0.0
        for key, count in deltas(old, new, REQUESTS, ["method", "code"]).items():
            before, rate = requests.get(key, (0.0, 0.0))
            requests[key] = (before + count, rate + (count / elapsed if elapsed > 0 else 0.0))
    timed = kind == "window"
    rows = [
        RequestRate(method=m, code=c, count=count, per_s=rate if timed else None)
        for (m, c), (count, rate) in sorted(requests.items())
    ]
    hits = sum(sum(deltas(o, n, CACHE_HITS, []).values()) for o, n in pairs)
    misses = sum(sum(deltas(o, n, CACHE_MISSES, []).values()) for o, n in pairs)
    rate_series, p99_series = _series(fresh)
    return {
        "window": Window(kind=kind, seconds=seconds, gateways=len(fresh)),
        "request_rate_per_s": sum(r.per_s or 0.0 for r in rows) if timed else None,
        "requests": rows,
        "errors": [c for c in _counts(pairs, REQUESTS, ["code"]) if c.key != "OK"],
        "degraded": _counts(pairs, DEGRADED, ["reason"]),
        "latency": _latency(pairs),
        "breakers_open": sorted(
            {
                labels.get("model", "")
                for _, new in pairs
                for labels, value in new.values(BREAKER_OPEN)
                if value >= 1
            }
        ),
        "feature_cache_hit_rate": finite(hits / (hits + misses)) if hits + misses else None,
        "feature_cache_lookups": hits + misses,
        "rate_series": rate_series,
        "p99_series": p99_series,
    }


def endpoint_rows(endpoints: Sequence[EndpointState], now: float) -> list[Endpoint]:
    rows = []
    for e in endpoints:
        last = e.ring[-1].at if e.ring else None
        rows.append(
            Endpoint(
                url=e.url,
                ok=e.error is None and bool(e.ring),
                samples=len(e.ring),
                last_sample_at=datetime.fromtimestamp(last, UTC) if last else None,
                age_s=round(now - last, 3) if last else None,
                error=e.error,
            )
        )
    return rows


def triton_state(url: str, timeout_s: float = TRITON_TIMEOUT_S) -> TritonState:
    """Triton's readiness and repository index (unreachable: the reason, no models)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        client = grpcclient.InferenceServerClient(url)
    except Exception as exc:  # a malformed URL
        return TritonState(url=url, reachable=False, ready=False, error=str(exc), models=[])
    try:
        ready = bool(client.is_server_ready(client_timeout=timeout_s))
        index = client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
    except InferenceServerException as exc:
        message = exc.message() or str(exc)
        return TritonState(url=url, reachable=False, ready=False, error=message, models=[])
    finally:
        client.close()
    models = [
        TritonModel(
            name=str(m.get("name", "")),
            version=str(m.get("version", "")),
            state=str(m.get("state", "")),
            reason=str(m.get("reason", "")),
        )
        for m in index.get("models", [])
    ]
    models.sort(key=lambda m: (m.name, int(m.version) if m.version.isdigit() else -1, m.version))
    return TritonState(url=url, reachable=True, ready=ready, error=None, models=models)


def served_versions(detail: dict[str, Any] | None) -> dict[str, ServedVersions]:
    """What a heartbeat says the gateway routes each target to: its "serving", or, from a
    gateway of an earlier release, the detail itself ({target: [production, canary, shadow]})."""
    detail = detail or {}
    serving = detail.get("serving")
    if not isinstance(serving, dict):
        serving = {k: v for k, v in detail.items() if isinstance(v, list)}
    out = {}
    for target, versions in sorted(serving.items()):
        if not isinstance(versions, list):
            continue
        production, canary, shadow = ([*map(str, versions), "", "", ""])[:3]
        out[str(target)] = ServedVersions(
            production=production, canary=canary or None, shadow=shadow or None
        )
    return out


def gateway_rows(ctx: ConsoleContext, revision: int | None, now: datetime) -> list[GatewayState]:
    max_age = ctx.settings.registry.heartbeat_max_age_s
    rows = []
    for instance in ctx.registry.instances():
        detail = instance.detail or {}
        age = (now - instance.heartbeat_at).total_seconds()
        pid = detail.get("pid")
        rows.append(
            GatewayState(
                instance_id=instance.instance_id,
                address=_text(detail.get("address")),
                metrics_url=_text(detail.get("metrics_url")),
                pid=pid if isinstance(pid, int) else None,
                started_at=_text(detail.get("started_at")),
                heartbeat_at=instance.heartbeat_at,
                age_s=round(age, 3),
                live=age < max_age,
                revision=instance.revision,
                behind=None if revision is None else instance.revision < revision,
                serving=served_versions(detail),
            )
        )
    return rows


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def serving_status(ctx: ConsoleContext) -> ServingStatus:
    """Everything the Serving page shows (the page and GET /api/v1/serving)."""
    now = time.time()
    sampler = sampler_of(ctx)
    endpoints = sampler.endpoints() if sampler is not None else []
    registry_error = None
    revision: int | None = None
    gateways: list[GatewayState] = []
    try:
        revision = ctx.registry.revision()
        gateways = gateway_rows(ctx, revision, datetime.fromtimestamp(now, UTC))
    except Exception as exc:  # the page still shows the metrics and Triton
        registry_error = f"registry: not readable ({exc})"
    return ServingStatus(
        at=datetime.fromtimestamp(now, UTC),
        metrics_source="settings" if ctx.settings.console.metrics_urls else "heartbeats",
        metrics_source_error=sampler.source_error if sampler is not None else None,
        scrape_interval_s=ctx.settings.console.scrape_interval_s,
        endpoints=endpoint_rows(endpoints, now),
        triton=triton_state(ctx.settings.triton.url),
        registry_revision=revision,
        registry_error=registry_error,
        heartbeat_max_age_s=ctx.settings.registry.heartbeat_max_age_s,
        gateways=gateways,
        **metric_figures(endpoints),
    )


def charts(status: ServingStatus) -> dict[str, Markup]:
    def lines(series: list[SeriesOut]) -> list[Series]:
        return [Series(s.name, [(x, y) for x, y in s.points if y is not None]) for s in series]

    return {
        "rate": line_chart(
            lines(status.rate_series),
            title="Requests per second, per gateway",
            y_label="RPC/s",
            x_is_time=True,
            y_format="{:.2f}",
        ),
        "p99": line_chart(
            lines(status.p99_series),
            title="p99 latency of a request (stage total), per gateway",
            y_label="ms",
            x_is_time=True,
            y_format="{:.2f} ms",
        ),
    }


@router.get("/serving", response_class=HTMLResponse, include_in_schema=False)
def serving_page(
    request: Request,
    ctx: Annotated[ConsoleContext, Depends(get_context)],
    login: Annotated[Login | None, Depends(current_login)],
) -> Response:
    status = serving_status(ctx)
    return ctx.templates.TemplateResponse(
        request,
        "serving.html",
        {
            "page": "serving",
            "login": login,
            "s": status,
            "charts": charts(status),
            "stages": [r for r in status.latency if r.target == ALL],
            "by_target": [r for r in status.latency if r.target != ALL],
        },
    )


@router.get("/api/v1/serving", response_model=ServingStatus, tags=["serving"])
def serving_api(ctx: Annotated[ConsoleContext, Depends(get_context)]) -> ServingStatus:
    """Request rates, latency by stage, errors, degradations, breakers and the feature cache
    from the gateways' metrics; Triton's models; the gateways' heartbeats."""
    return serving_status(ctx)
