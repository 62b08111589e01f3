"""The console's features area: the Feast catalogue (entities, views, features with dtype,
default, owner and tags), which feature services, targets and model versions use each feature,
each service's contract schema hash, freshness per view in the online store, and the share of
candidate rows served with a feature's default, from the gateways' metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from scoring.console.auth import Login, current_login
from scoring.console.context import ConsoleContext, ConsoleError, get_context
from scoring.console.freshness import REDIS_SAMPLE_KEYS, OnlineRows, freshness_reader
from scoring.core.contract import DEFAULT_TAG, LENGTH_TAG, contract_from_store
from scoring.core.targets import TARGETS

if TYPE_CHECKING:
    from scoring.console.sampler import Scrape

logger = logging.getLogger(__name__)
router = APIRouter()

METRICS_TIMEOUT_S = 1.5
# The gateway's counters (scoring.gateway.prometheus), as the text format names their samples.
DEFAULTED_SAMPLE = "scoring_feature_defaulted_rows_total"
ROWS_SAMPLE = "scoring_assembled_rows_total"
FEATURE_VIEW, ON_DEMAND = "feature_view", "on_demand_feature_view"


class ModelRef(BaseModel):
    target: str
    version: int
    stage: str


class EntityOut(BaseModel):
    name: str
    join_keys: list[str]
    value_type: str
    description: str
    owner: str
    tags: dict[str, str]


class DefaultShare(BaseModel):
    """Candidate rows of one feature service that got a feature's default (all gateways,
    since each started)."""

    service: str
    defaulted_rows: float
    rows: float
    share: float | None


class FeatureOut(BaseModel):
    name: str
    ref: str  # `<view>__<feature>`, as contracts and the gateway's metrics name it
    dtype: str
    default: float | None  # None: none declared (a contract reading it would refuse)
    length: int | None  # a vector's declared length
    description: str
    owner: str
    tags: dict[str, str]
    services: list[str]
    targets: list[str]
    models: list[ModelRef]
    default_share: float | None  # over every service reading it; None: no metrics
    default_shares: list[DefaultShare]


class FreshnessOut(BaseModel):
    """Age of a view's newest row in the online store, and whether that is too old."""

    store: str
    newest_event_at: datetime | None
    age_s: float | None
    entities: int
    sampled: bool  # Redis: read from a sample of at most `keys_read` keys per entity
    keys_read: int
    materialized_until: datetime | None  # Feast's last materialisation interval end
    stale_after_s: float  # the view's ttl, else the console's stale_after_s
    stale: bool
    reason: str | None


class ViewOut(BaseModel):
    name: str
    kind: str  # feature_view or on_demand_feature_view
    entities: list[str]
    join_keys: list[str]
    ttl_s: float | None
    owner: str
    tags: dict[str, str]
    description: str
    online: bool
    online_source: str
    offline_source: str
    sources: list[str]  # an on-demand view's inputs: views and request sources
    services: list[str]
    features: list[FeatureOut]
    freshness: FreshnessOut | None  # None: on-demand (computed per request) or offline only
    freshness_error: str | None
    feast_ui_url: str | None


class ServiceOut(BaseModel):
    name: str
    description: str
    tags: dict[str, str]
    views: list[str]
    features: int
    targets: list[str]
    models: list[ModelRef]
    schema_hash: str | None
    contract_error: str | None  # why the service is not a model contract (then no hash)
    rows: float | None  # candidate rows the gateways assembled with it; None: no metrics


class MetricsSource(BaseModel):
    url: str
    error: str | None


class Catalogue(BaseModel):
    project: str
    online_store: str
    generated_at: datetime
    feast_ui_url: str | None
    entities: list[EntityOut]
    views: list[ViewOut]
    services: list[ServiceOut]
    stale_views: list[str]
    metrics_sources: list[MetricsSource]
    metrics_note: str | None  # "no gateway metrics" when none could be read


# --- gateway metrics ------------------------------------------------------------------------


class DefaultCounts:
    """The gateways' default counters, summed over gateways."""

    def __init__(self) -> None:
        self.defaulted: dict[tuple[str, str], float] = {}
        self.rows: dict[str, float] = {}
        self.sources: list[MetricsSource] = []

    @property
    def any(self) -> bool:
        return any(s.error is None for s in self.sources)

    def add(self, scrape: Scrape) -> None:
        self.sources.append(MetricsSource(url=scrape.url, error=None))
        for (service, feature), value in scrape.by(
            DEFAULTED_SAMPLE, ["service", "feature"]
        ).items():
            self.defaulted[service, feature] = self.defaulted.get((service, feature), 0.0) + value
        for (service,), value in scrape.by(ROWS_SAMPLE, ["service"]).items():
            self.rows[service] = self.rows.get(service, 0.0) + value

    def failed(self, url: str, error: str) -> None:
        self.sources.append(MetricsSource(url=url, error=error))

    def shares(self, ref: str, services: Sequence[str]) -> list[DefaultShare]:
        out = []
        for service in services:
            rows = self.rows.get(service)
            if rows is None:
                continue
            defaulted = self.defaulted.get((service, ref), 0.0)
            share = defaulted / rows if rows > 0 else None
            out.append(
                DefaultShare(service=service, defaulted_rows=defaulted, rows=rows, share=share)
            )
        return out


def default_counts(ctx: ConsoleContext) -> DefaultCounts:
    """The gateways' counters: the Serving page's sampler's newest scrape of each gateway
    (scoring.console.sampler), or one scrape of each now where it has not scraped yet. An
    unreachable gateway is listed with its error."""
    from scoring.console.sampler import Sampler, ScrapeError, scrape
    from scoring.console.serving import EXTRA, metrics_urls

    counts = DefaultCounts()
    sampler = ctx.extras.get(EXTRA)
    endpoints = sampler.endpoints() if isinstance(sampler, Sampler) else []
    if endpoints:
        for endpoint in endpoints:
            if endpoint.error is None and endpoint.ring:
                counts.add(endpoint.ring[-1])
            else:
                counts.failed(endpoint.url, endpoint.error or "not scraped yet")
        return counts
    try:
        urls = metrics_urls(ctx)
    except Exception as exc:  # the registry unreadable: no heartbeats to find gateways by
        logger.warning("console_metrics_urls_unreadable error=%s", exc)
        return counts
    for url in urls:
        try:
            counts.add(scrape(url, METRICS_TIMEOUT_S))
        except ScrapeError as exc:
            counts.failed(url, str(exc))
    return counts


# --- the catalogue --------------------------------------------------------------------------


def _ttl_s(ttl: timedelta | None) -> float | None:
    return ttl.total_seconds() if ttl else None  # Feast: a zero ttl is none


def _owner(obj: Any) -> str:
    return str(getattr(obj, "owner", "") or obj.tags.get("owner", ""))


def _default(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _offline(view: Any) -> str:
    source = view.batch_source
    if source is None:
        return "-"
    where = getattr(source, "path", None) or getattr(source, "table", None) or ""
    return f"{source.name} ({type(source).__name__}{': ' + str(where) if where else ''})"


def _freshness(
    view: Any, rows: OnlineRows, kind: str, now: datetime, stale_after_s: float
) -> FreshnessOut:
    ttl = _ttl_s(view.ttl)
    limit = ttl if ttl else stale_after_s
    intervals = getattr(view, "materialization_intervals", None) or []
    until = max((end for _, end in intervals), default=None)
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    age = (now - rows.newest).total_seconds() if rows.newest is not None else None
    reason: str | None = None
    if age is None:
        reason = "never materialised: no row in the online store"
    elif age > limit:
        reason = f"newest row {_duration(age)} old, " + (
            f"older than its ttl of {_duration(limit)}: the gateway serves its features' defaults"
            if ttl
            else f"older than console.stale_after_s ({_duration(limit)})"
        )
    return FreshnessOut(
        store=kind,
        newest_event_at=rows.newest,
        age_s=age,
        entities=rows.entities,
        sampled=rows.sampled,
        keys_read=rows.keys_read,
        materialized_until=until,
        stale_after_s=limit,
        stale=reason is not None,
        reason=reason,
    )


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _feast_ui(ctx: ConsoleContext, project: str, path: str) -> str | None:
    base = ctx.settings.console.feast_ui_url
    return f"{base.rstrip('/')}/p/{project}/{path}" if base else None


@dataclass
class _Uses:
    """Who reads what: targets and model versions per service, services per feature."""

    targets: dict[str, list[str]]  # service -> targets reading it
    models: dict[str, list[ModelRef]]  # service -> model versions trained on it
    services: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (view, feature)

    def of_view(self, view: str) -> list[str]:
        return sorted({s for (v, _), names in self.services.items() if v == view for s in names})


def _uses(ctx: ConsoleContext) -> _Uses:
    targets: dict[str, list[str]] = {}
    for target in TARGETS.values():
        for name in (target.feature_service, target.cart_feature_service):
            if name:
                targets.setdefault(name, []).append(target.name)
    models: dict[str, list[ModelRef]] = {}
    try:
        records = ctx.registry.versions()
    except Exception as exc:  # the registry down: the catalogue without model versions
        logger.warning("console_versions_failed error=%s", exc)
        records = []
    for r in records:
        ref = ModelRef(target=r.target, version=r.version, stage=str(r.stage))
        models.setdefault(r.feature_service, []).append(ref)
    return _Uses(targets, models)


def _services(store: Any, uses: _Uses, counts: DefaultCounts) -> list[ServiceOut]:
    """Every FeatureService with its contract's schema hash (or why it has none); records
    which services read each feature in `uses`."""
    out = []
    for service in sorted(store.list_feature_services(), key=lambda s: s.name):
        n = 0
        for projection in service.feature_view_projections:
            for f in projection.features:
                uses.services.setdefault((projection.name, f.name), []).append(service.name)
                n += 1
        schema_hash: str | None = None
        error: str | None = None
        try:
            schema_hash = contract_from_store(store, service.name).schema_hash
        except Exception as exc:  # e.g. String features: not a model's contract
            error = str(exc)
        out.append(
            ServiceOut(
                name=service.name,
                description=service.description or "",
                tags=dict(service.tags),
                views=[p.name_to_use() for p in service.feature_view_projections],
                features=n,
                targets=sorted(uses.targets.get(service.name, [])),
                models=uses.models.get(service.name, []),
                schema_hash=schema_hash,
                contract_error=error,
                rows=counts.rows.get(service.name) if counts.any else None,
            )
        )
    return out


def _feature(
    view: str, f: Any, owner: str, view_tags: dict[str, str], uses: _Uses, counts: DefaultCounts
) -> FeatureOut:
    services = uses.services.get((view, f.name), [])
    tags = dict(f.tags)
    ref = f"{view}__{f.name}"
    shares = counts.shares(ref, services) if counts.any else []
    rows = sum(s.rows for s in shares)
    length = tags.get(LENGTH_TAG)
    return FeatureOut(
        name=f.name,
        ref=ref,
        dtype=str(f.dtype),
        default=_default(tags.get(DEFAULT_TAG, view_tags.get(f"{DEFAULT_TAG}:{f.name}"))),
        length=int(length) if length and length.isdigit() else None,
        description=f.description or "",
        owner=str(tags.get("owner", owner)),
        tags=tags,
        services=services,
        targets=sorted({t for s in services for t in uses.targets.get(s, [])}),
        models=[m for s in services for m in uses.models.get(s, [])],
        default_share=sum(s.defaulted_rows for s in shares) / rows if rows > 0 else None,
        default_shares=shares,
    )


def _online_rows(store: Any, views: list[Any]) -> tuple[str, dict[str, OnlineRows], str | None]:
    """(reader kind, newest rows per view, why freshness is unknown)."""
    kind = str(store.config.online_store.type)
    reader = freshness_reader(store)
    if reader is None:
        return kind, {}, f"freshness is not read from a {kind} online store"
    try:
        return reader.kind, reader.newest_rows([v for v in views if v.online]), None
    except Exception as exc:  # the store unreachable: say so on the page
        return reader.kind, {}, f"{type(exc).__name__}: {exc}"


def catalogue(ctx: ConsoleContext) -> Catalogue:
    """The whole catalogue, with freshness and default shares."""
    store = ctx.feature_store()
    counts = default_counts(ctx)
    now = datetime.now(UTC)
    project = store.project
    uses = _uses(ctx)
    services = _services(store, uses, counts)
    stale_after_s = ctx.settings.console.stale_after_s

    stored = sorted(store.list_feature_views(), key=lambda v: v.name)
    reader_kind, online_rows, fresh_error = _online_rows(store, stored)
    views: list[ViewOut] = []
    for view in stored:
        owner = _owner(view)
        rows = online_rows.get(view.name)
        views.append(
            ViewOut(
                name=view.name,
                kind=FEATURE_VIEW,
                entities=list(view.entities),
                join_keys=list(view.join_keys),
                ttl_s=_ttl_s(view.ttl),
                owner=owner,
                tags=dict(view.tags),
                description=view.description or "",
                online=bool(view.online),
                online_source=(
                    f"{store.config.online_store.type} online store"
                    if view.online
                    else "offline only"
                ),
                offline_source=_offline(view),
                sources=[],
                services=uses.of_view(view.name),
                features=[_feature(view.name, f, owner, {}, uses, counts) for f in view.features],
                freshness=(
                    _freshness(view, rows, reader_kind, now, stale_after_s)
                    if rows is not None
                    else None
                ),
                freshness_error=fresh_error if view.online else None,
                feast_ui_url=_feast_ui(ctx, project, f"feature-view/{view.name}"),
            )
        )
    for odfv in sorted(store.list_on_demand_feature_views(), key=lambda v: v.name):
        owner = _owner(odfv)
        tags = dict(odfv.tags)
        views.append(
            ViewOut(
                name=odfv.name,
                kind=ON_DEMAND,
                entities=[],
                join_keys=[],
                ttl_s=None,
                owner=owner,
                tags=tags,
                description=odfv.description or "",
                online=True,
                online_source="computed per request (on demand)",
                offline_source="computed from its sources",
                sources=[*odfv.source_feature_view_projections, *odfv.source_request_sources],
                services=uses.of_view(odfv.name),
                features=[_feature(odfv.name, f, owner, tags, uses, counts) for f in odfv.features],
                freshness=None,
                freshness_error=None,
                feast_ui_url=_feast_ui(ctx, project, f"on-demand-feature-view/{odfv.name}"),
            )
        )
    entities = [
        EntityOut(
            name=e.name,
            join_keys=[e.join_key],
            value_type=e.value_type.name,
            description=e.description or "",
            owner=e.owner or e.tags.get("owner", ""),
            tags=dict(e.tags),
        )
        for e in sorted(store.list_entities(), key=lambda e: e.name)
        if e.name != "__dummy"
    ]
    return Catalogue(
        project=project,
        online_store=str(store.config.online_store.type),
        generated_at=now,
        feast_ui_url=ctx.settings.console.feast_ui_url,
        entities=entities,
        views=views,
        services=services,
        stale_views=[v.name for v in views if v.freshness is not None and v.freshness.stale],
        metrics_sources=counts.sources,
        metrics_note=None if counts.any else "no gateway metrics",
    )


def find_view(cat: Catalogue, name: str) -> ViewOut:
    """One view of the catalogue.

    Raises:
        ConsoleError: 404 naming `view` for an unknown one.
    """
    for view in cat.views:
        if view.name == name:
            return view
    known = ", ".join(v.name for v in cat.views)
    raise ConsoleError(404, f"view: unknown {name!r} ({known})", "view")


# --- routes ---------------------------------------------------------------------------------

Ctx = Annotated[ConsoleContext, Depends(get_context)]
CurrentLogin = Annotated[Login | None, Depends(current_login)]


@router.get("/api/v1/features", response_model=Catalogue, tags=["features"])
def api_features(ctx: Ctx) -> Catalogue:
    """The feature catalogue: entities, views, features, services, freshness, default shares."""
    return catalogue(ctx)


@router.get("/api/v1/features/views/{name}", response_model=ViewOut, tags=["features"])
def api_view(name: str, ctx: Ctx) -> ViewOut:
    """One feature view (or on-demand view) with its features and freshness; 404 if unknown."""
    return find_view(catalogue(ctx), name)


def _page(request: Request, ctx: ConsoleContext, login: Login | None, name: str | None) -> Response:
    """The catalogue page; with `name`, only that view (404 if unknown)."""
    data = catalogue(ctx)
    detail = None if name is None else find_view(data, name)
    return ctx.templates.TemplateResponse(
        request,
        "features.html",
        {
            "page": "features",
            "login": login,
            "cat": data,
            "views": data.views if detail is None else [detail],
            "detail": detail,
            "sample_keys": REDIS_SAMPLE_KEYS,
        },
    )


@router.get("/features", response_class=HTMLResponse, include_in_schema=False)
def features_page(request: Request, ctx: Ctx, login: CurrentLogin) -> Response:
    return _page(request, ctx, login, None)


@router.get("/features/views/{name}", response_class=HTMLResponse, include_in_schema=False)
def view_page(name: str, request: Request, ctx: Ctx, login: CurrentLogin) -> Response:
    return _page(request, ctx, login, name)
