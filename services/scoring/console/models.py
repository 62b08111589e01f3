"""The Models area: every target's versions, a side-by-side comparison (tables and charts), the
audit trail, and the gates' verdict on a version before anyone acts (the same checks the
registry's `Promoter` runs). The changes themselves: scoring.console.actions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from pydantic import BaseModel

from scoring.console.auth import Login, current_login, require_admin
from scoring.console.context import ConsoleContext, ConsoleError, get_context
from scoring.core.access import Actor
from scoring.core.json_safe import finite, json_safe
from scoring.core.targets import TARGETS
from scoring.registry import Stage, VersionRecord
from scoring.registry.types import AuditEvent, VersionNotFound

router = APIRouter()
Ctx = Annotated[ConsoleContext, Depends(get_context)]
MaybeLogin = Annotated[Login | None, Depends(current_login)]
Admin = Annotated[Actor, Depends(require_admin)]
# The metrics every table shows first (the gates' and the headline ones), then the rest.
HEADLINE = ("auc", "ndcg@10", "logloss", "auc_vs_oracle", "hit_rate@10")
MANIFEST = "manifest.json"


class Action(StrEnum):
    PROMOTE = "promote"
    CANARY = "canary"
    SHADOW = "shadow"
    STOP = "stop"
    ROLLBACK = "rollback"


class VersionView(BaseModel):
    target: str
    version: int
    stage: Stage
    traffic_percent: float | None
    feature_service: str
    schema_hash: str
    train_start: str | None
    train_end: str | None
    metrics: dict[str, float | None]
    created_at: datetime
    created_by: str
    stage_changed_at: datetime

    @classmethod
    def of(cls, r: VersionRecord) -> VersionView:
        return cls(
            target=r.target,
            version=r.version,
            stage=r.stage,
            traffic_percent=r.traffic_percent,
            feature_service=r.feature_service,
            schema_hash=r.schema_hash,
            train_start=r.train_start,
            train_end=r.train_end,
            metrics={k: finite(v) for k, v in r.metrics.items()},
            created_at=r.created_at,
            created_by=r.created_by,
            stage_changed_at=r.stage_changed_at,
        )


class TargetView(BaseModel):
    target: str
    kind: str
    production: int | None
    canary: int | None
    canary_percent: float | None
    shadow: int | None
    versions: list[VersionView]


class EventView(BaseModel):
    id: int
    at: datetime
    target: str
    version: int
    from_stage: Stage | None
    to_stage: Stage
    traffic_percent: float | None
    actor: str
    reason: str
    forced: bool
    details: dict[str, Any] | None

    @classmethod
    def of(cls, e: AuditEvent) -> EventView:
        return cls(
            id=e.id,
            at=e.at,
            target=e.target,
            version=e.version,
            from_stage=e.from_stage,
            to_stage=e.to_stage,
            traffic_percent=e.traffic_percent,
            actor=e.actor,
            reason=e.reason,
            forced=e.forced,
            details=json_safe(e.details),
        )


class GateView(BaseModel):
    gate: str
    passed: bool
    detail: str
    overridable: bool


class VersionDetail(BaseModel):
    version: VersionView
    features: list[dict[str, Any]]
    evaluation: dict[str, dict[str, float | None]]
    offline_evaluation: dict[str, dict[str, dict[str, float | None]]]
    training: dict[str, Any]
    history: list[EventView]
    gates: dict[str, list[GateView]]
    actions: list[Action]


class ComparisonRow(BaseModel):
    metric: str
    values: list[float | None]
    deltas: list[float | None]  # each version minus the first
    gated: bool
    lower_is_better: bool


class Comparison(BaseModel):
    target: str
    versions: list[VersionView]
    metrics: list[ComparisonRow]
    evaluation: dict[str, list[dict[str, float | None]]]  # method -> per version
    offline_evaluation: dict[str, list[dict[str, dict[str, float | None]]]]
    same_schema: bool


# --- reading ------------------------------------------------------------------------------


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ConsoleError(404, f"target: unknown {target!r} ({', '.join(TARGETS)})", "target")
    return target


def record_of(ctx: ConsoleContext, target: str, version: int) -> VersionRecord:
    check_target(target)
    try:
        return ctx.registry.get(target, version)
    except VersionNotFound:
        known = ", ".join(f"v{r.version}" for r in ctx.registry.versions(target)) or "none"
        raise ConsoleError(
            404, f"version: {target} v{version} is not registered (registered: {known})", "version"
        ) from None


def targets_overview(ctx: ConsoleContext) -> list[TargetView]:
    """Every target with its routing and versions (newest first)."""
    routing = ctx.registry.routing().targets
    by_target: dict[str, list[VersionRecord]] = {}
    for record in ctx.registry.versions():
        by_target.setdefault(record.target, []).append(record)
    views = []
    for name, target in TARGETS.items():
        r = routing.get(name)
        views.append(
            TargetView(
                target=name,
                kind=target.kind.value,
                production=r.production.version if r and r.production else None,
                canary=r.canary.version if r and r.canary else None,
                canary_percent=r.canary.traffic_percent if r and r.canary else None,
                shadow=r.shadow.version if r and r.shadow else None,
                versions=[
                    VersionView.of(v)
                    for v in sorted(by_target.get(name, []), key=lambda v: -v.version)
                ],
            )
        )
    return views


def manifest(ctx: ConsoleContext, record: VersionRecord) -> dict[str, Any]:
    """The version's manifest on disk (it gains `scoring evaluate`'s figures), else the one
    registered with it."""
    path = Path(record.artifact_path).parent / MANIFEST
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return ctx.registry.manifest(record.target, record.version)


def _metric_table(table: Any) -> dict[str, dict[str, float | None]]:
    if not isinstance(table, dict):
        return {}
    return {
        str(method): {str(k): finite(v) for k, v in row.items()}
        for method, row in table.items()
        if isinstance(row, dict)
    }


def _offline(m: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """`scoring evaluate`'s figures per protocol: method -> metric -> value."""
    out = {}
    for kind, entry in (m.get("offline_evaluation") or {}).items():
        if isinstance(entry, dict):
            out[str(kind)] = _metric_table(entry.get("metrics"))
    return out


def promoter(ctx: ConsoleContext, actor: Actor | None, say: Callable[[str], None]) -> Any:
    """The CLI's promoter (workflows.build_promoter) for `actor`; None only reads verdicts.

    Raises:
        ConsoleError: 409 no feature repository to read the live schemas from (a change).
    """
    from scoring import workflows

    try:
        store = ctx.feature_store()  # the console's open one: not a new FeatureStore per call
    except ConsoleError as exc:
        if actor is not None:
            raise ConsoleError(409, f"{exc.message}; nothing changed", "version") from None
        return _reader(ctx, exc.message)
    who = actor or Actor("console (read only)", "none")
    return workflows.build_promoter(ctx.settings, ctx.registry, who, say=say, store=store)


def _reader(ctx: ConsoleContext, problem: str) -> Any:
    """A promoter that only gives verdicts where the feature repository cannot be opened: the
    schema gate refuses with the reason, the other gates check as usual."""
    from scoring.registry.promotion import GateRefused, Promoter
    from scoring.triton.control import TritonControl

    def live_schema(service: str) -> str:
        raise GateRefused(f"the live feature service {service} cannot be read: {problem}")

    return Promoter(ctx.settings, ctx.registry, live_schema, TritonControl(ctx.settings.triton))


def gate_view(result: Any) -> GateView:
    return GateView(
        gate=result.gate,
        passed=result.passed,
        detail=result.detail,
        overridable=result.overridable,
    )


def available_actions(ctx: ConsoleContext, record: VersionRecord) -> list[Action]:
    """What can be done to this version now (the others would be refused)."""
    if record.stage == Stage.PRODUCTION:
        return []
    actions = [Action.PROMOTE, Action.CANARY, Action.SHADOW]
    if record.stage in (Stage.CANARY, Stage.SHADOW):
        actions.append(Action.STOP)
    history = ctx.registry.history(record.target)
    if any(e.version == record.version and e.to_stage == Stage.PRODUCTION for e in history):
        actions.append(Action.ROLLBACK)
    return actions


def version_detail(ctx: ConsoleContext, target: str, version: int) -> VersionDetail:
    record = record_of(ctx, target, version)
    m = manifest(ctx, record)
    contract = m.get("contract") or {}
    training = m.get("training") or {}
    gates = {}
    if record.stage != Stage.PRODUCTION:
        gates = {
            stage.value: [gate_view(r) for r in verdict(ctx, record, stage)]
            for stage in (Stage.PRODUCTION, Stage.CANARY)
        }
    return VersionDetail(
        version=VersionView.of(record),
        features=json_safe(list(contract.get("features") or [])),
        evaluation=_metric_table((m.get("evaluation") or {}).get("table")),
        offline_evaluation=_offline(m),
        training=json_safe(
            {
                k: training.get(k)
                for k in ("train_window", "test_window", "train_rows", "test_rows", "seconds")
                if k in training
            }
        ),
        history=[EventView.of(e) for e in ctx.registry.history(target) if e.version == version],
        gates=gates,
        actions=available_actions(ctx, record),
    )


def verdict(ctx: ConsoleContext, record: VersionRecord, stage: Stage) -> list[Any]:
    from scoring.registry.promotion import GateResult

    try:
        return list(promoter(ctx, None, lambda _: None).verdict(record, stage))
    except ConsoleError as exc:
        return [GateResult("schema", False, exc.message)]
    except Exception as exc:  # the live schema could not be read (Feast registry broken)
        return [GateResult("schema", False, f"the live feature service could not be read: {exc}")]


def compare(ctx: ConsoleContext, target: str, versions: list[int]) -> Comparison:
    """Two or more versions side by side: metrics (deltas against the first), the trainer's
    evaluation table (model, oracle, baselines) and `scoring evaluate`'s figures."""
    from scoring.registry.promotion import LOWER_IS_BETTER

    check_target(target)
    if len(versions) < 2:
        raise ConsoleError(400, "v: pick two or more versions to compare (?v=1&v=2)", "v")
    if len(set(versions)) != len(versions):
        raise ConsoleError(400, f"v: a version is listed twice ({versions})", "v")
    versions = sorted(versions)  # oldest first: each delta is a newer version minus the first
    records = [record_of(ctx, target, v) for v in versions]
    manifests = [manifest(ctx, r) for r in records]
    names = sorted({k for r in records for k in r.metrics})
    names = [n for n in HEADLINE if n in names] + [n for n in names if n not in HEADLINE]
    rows = []
    for name in names:
        values = [finite(r.metrics.get(name)) for r in records]
        first = values[0]
        deltas = [None if v is None or first is None else round(v - first, 10) for v in values]
        rows.append(
            ComparisonRow(
                metric=name,
                values=values,
                deltas=deltas,
                gated=name in ctx.settings.registry.gate_metrics,
                lower_is_better=name in LOWER_IS_BETTER,
            )
        )
    tables = [_metric_table((m.get("evaluation") or {}).get("table")) for m in manifests]
    methods = sorted({k for t in tables for k in t}, key=_method_order)
    offline = [_offline(m) for m in manifests]
    kinds = sorted({k for o in offline for k in o})
    return Comparison(
        target=target,
        versions=[VersionView.of(r) for r in records],
        metrics=rows,
        evaluation={method: [t.get(method, {}) for t in tables] for method in methods},
        offline_evaluation={kind: [o.get(kind, {}) for o in offline] for kind in kinds},
        same_schema=len({r.schema_hash for r in records}) == 1,
    )


def _method_order(method: str) -> tuple[int, str]:
    order = {"model": 0, "oracle": 1}
    return order.get(method, 2), method


def history(ctx: ConsoleContext, target: str | None, limit: int) -> list[EventView]:
    if target:
        check_target(target)
    events = ctx.registry.history(target or None)
    return [EventView.of(e) for e in reversed(events[-limit:])]


# --- routes: JSON -------------------------------------------------------------------------


@router.get("/api/v1/models", tags=["models"])
def api_models(ctx: Ctx) -> list[TargetView]:
    """Every target's routing and versions."""
    return targets_overview(ctx)


@router.get("/api/v1/models/{target}/versions/{version}", tags=["models"])
def api_version(ctx: Ctx, target: str, version: int) -> VersionDetail:
    """A version: metrics, contract, evaluation, history, the gates' verdict, actions."""
    return version_detail(ctx, target, version)


@router.get("/api/v1/models/{target}/compare", tags=["models"])
def api_compare(ctx: Ctx, target: str, v: Annotated[list[int], Query()]) -> Comparison:
    """Versions side by side (?v=1&v=2...)."""
    return compare(ctx, target, v)


@router.get("/api/v1/history", tags=["models"])
def api_history(
    ctx: Ctx,
    target: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> list[EventView]:
    """The audit trail, newest first."""
    return history(ctx, target, limit)


# --- routes: pages ------------------------------------------------------------------------


def page(
    ctx: ConsoleContext, request: Request, name: str, login: Login | None, **values: Any
) -> Response:
    return ctx.templates.TemplateResponse(
        request, name, {"page": "models", "login": login, **values}
    )


@router.get("/models", response_class=HTMLResponse, include_in_schema=False)
def models_page(request: Request, ctx: Ctx, login: MaybeLogin) -> Response:
    return page(ctx, request, "models.html", login, targets=targets_overview(ctx))


@router.get("/models/{target}/v{version}", response_class=HTMLResponse, include_in_schema=False)
def version_page(
    request: Request, ctx: Ctx, login: MaybeLogin, target: str, version: int
) -> Response:
    detail = version_detail(ctx, target, version)
    return page(ctx, request, "version.html", login, d=detail, v=detail.version)


@router.get("/models/{target}/compare", response_class=HTMLResponse, include_in_schema=False)
def compare_page(
    request: Request,
    ctx: Ctx,
    login: MaybeLogin,
    target: str,
    v: Annotated[list[int], Query()] = [],  # noqa: B006 - FastAPI reads the default
) -> Response:
    c = compare(ctx, target, v)
    return page(ctx, request, "compare.html", login, c=c, charts=comparison_charts(c))


def comparison_charts(c: Comparison) -> list[Markup]:
    """Bar charts: the gated and headline metrics per version, and for AUC and NDCG@10 the
    model against the oracle and the baselines per version."""
    from scoring.console.charts import bar_chart

    labels = [f"v{v.version}" for v in c.versions]
    charts = []
    shown = [r for r in c.metrics if r.metric in HEADLINE or r.gated]
    if shown:
        charts.append(
            bar_chart(
                [r.metric for r in shown],
                [(label, [r.values[i] for r in shown]) for i, label in enumerate(labels)],
                title=f"{c.target}: offline metrics per version",
            )
        )
    for metric in ("auc", "ndcg@10"):
        methods = [m for m, rows in c.evaluation.items() if any(metric in r for r in rows)]
        if methods:
            charts.append(
                bar_chart(
                    methods,
                    [
                        (label, [c.evaluation[m][i].get(metric) for m in methods])
                        for i, label in enumerate(labels)
                    ],
                    title=f"{metric}: the model against the oracle and the baselines",
                )
            )
    for kind, per_version in c.offline_evaluation.items():
        methods = sorted({m for table in per_version for m in table}, key=_method_order)
        first = next(
            (name for table in per_version for row in table.values() for name in row), None
        )
        if first is not None and methods:
            metric = first
            charts.append(
                bar_chart(
                    methods,
                    [
                        (label, [per_version[i].get(m, {}).get(metric) for m in methods])
                        for i, label in enumerate(labels)
                    ],
                    title=f"scoring evaluate ({kind}): {metric}",
                )
            )
    return charts


@router.get("/history", response_class=HTMLResponse, include_in_schema=False)
def history_page(
    request: Request,
    ctx: Ctx,
    login: MaybeLogin,
    target: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Response:
    events = history(ctx, target, limit)
    return ctx.templates.TemplateResponse(
        request,
        "history.html",
        {
            "page": "history",
            "login": login,
            "events": events,
            "target": target or "",
            "targets": list(TARGETS),
        },
    )
