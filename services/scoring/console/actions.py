"""Changes from the console: what an action would change and the gates' verdict (the
confirmation page), then the action itself through the CLI's `Promoter`
(`workflows.build_promoter`): one code path for the gates, Triton, the gateways' confirmation
and the audit. Every change needs an admin (scoring.console.auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from scoring.console.auth import CSRF_FIELD, Login, current_login, require_admin
from scoring.console.context import ConsoleContext, ConsoleError, get_context
from scoring.console.models import (
    Action,
    EventView,
    GateView,
    gate_view,
    page,
    promoter,
    record_of,
    verdict,
)
from scoring.core.access import Actor
from scoring.registry import RegistryError, Stage

router = APIRouter()
Ctx = Annotated[ConsoleContext, Depends(get_context)]
MaybeLogin = Annotated[Login | None, Depends(current_login)]
Admin = Annotated[Actor, Depends(require_admin)]

ACTION_STAGE = {
    Action.PROMOTE: Stage.PRODUCTION,
    Action.CANARY: Stage.CANARY,
    Action.SHADOW: Stage.SHADOW,
    Action.STOP: Stage.REGISTERED,
    Action.ROLLBACK: Stage.PRODUCTION,
}


class Plan(BaseModel):
    """What an action would change, before anyone confirms it."""

    target: str
    version: int
    action: Action
    percent: float | None
    before: dict[str, str]
    after: dict[str, str]
    changes: list[str]
    gates: list[GateView]
    blocked: bool  # a gate that cannot be overridden refuses it
    needs_force: bool  # a metric gate refuses it unless forced with a reason
    refusal: str | None


class ActionIn(BaseModel):
    reason: str = Field(default="", max_length=500)
    force: bool = False
    percent: float | None = Field(default=None, gt=0, le=100)


class ActionResult(BaseModel):
    target: str
    version: int
    action: Action
    actor: str
    events: list[EventView]
    progress: list[str]
    unconfirmed: list[str]


# --- changing -----------------------------------------------------------------------------


def _routing_of(ctx: ConsoleContext, target: str) -> dict[str, str]:
    r = ctx.registry.routing().targets.get(target)
    out = {"production": "-", "canary": "-", "shadow": "-"}
    if r is None:
        return out
    if r.production:
        out["production"] = f"v{r.production.version}"
    if r.canary:
        out["canary"] = f"v{r.canary.version} ({r.canary.traffic_percent or 0:g}%)"
    if r.shadow:
        out["shadow"] = f"v{r.shadow.version}"
    return out


def plan(
    ctx: ConsoleContext, target: str, version: int, action: Action, percent: float | None
) -> Plan:
    """What `action` on `target` v`version` would change, and the gates' verdict on it."""
    from scoring.registry.promotion import serving_versions

    record = record_of(ctx, target, version)
    if action == Action.CANARY:
        percent = 10.0 if percent is None else percent
        if not 0 < percent <= 100:
            raise ConsoleError(400, f"percent: must be in (0, 100], got {percent:g}", "percent")
    else:
        percent = None
    before = _routing_of(ctx, target)
    after = dict(before)
    label = f"v{version}"
    for stage, shown in list(after.items()):
        if shown.split(" ")[0] == label:
            after[stage] = "-"
    refusal = None
    if action in (Action.PROMOTE, Action.ROLLBACK):
        if record.stage == Stage.PRODUCTION:
            refusal = f"{target} v{version} is in production already"
        after["production"] = label
    elif action == Action.CANARY:
        if record.stage == Stage.PRODUCTION:
            refusal = f"{target} v{version} is the production version already"
        after["canary"] = f"{label} ({percent:g}%)"
    elif action == Action.SHADOW:
        if record.stage == Stage.PRODUCTION:
            refusal = f"{target} v{version} is the production version already"
        after["shadow"] = label
    elif record.stage not in (Stage.CANARY, Stage.SHADOW):
        refusal = (
            f"{target} v{version} is {record.stage}, not a canary or shadow: use rollback to "
            "replace the production version"
        )
    if action == Action.ROLLBACK and refusal is None:
        served = [e for e in ctx.registry.history(target) if e.to_stage == Stage.PRODUCTION]
        if not any(e.version == version for e in served):
            refusal = f"{target} v{version} never served in production: promote it instead"
    stage = ACTION_STAGE[action]
    if action == Action.STOP:
        gates: list[GateView] = []
    else:
        results = verdict(ctx, record, stage)
        if action == Action.ROLLBACK:  # the metric gate is skipped: that version served before
            results = [r for r in results if not r.overridable]
        gates = [gate_view(r) for r in results]
    serving = serving_versions(ctx.registry, target)
    adds = stage in (Stage.PRODUCTION, Stage.CANARY, Stage.SHADOW) and version not in serving
    changes = []
    if adds:
        changes.append(f"Triton loads {target} v{version} beside {sorted(serving)} and warms it up")
    changes.append("the registry records the change (audited as you, reason required for force)")
    live = sorted(
        i.instance_id for i in ctx.registry.instances(ctx.settings.registry.heartbeat_max_age_s)
    )
    changes.append(
        "the promotion waits until every live gateway applies it "
        f"({', '.join(live) or 'none live'})"
    )
    leaving = {int(v[1:].split(" ")[0]) for v in before.values() if v != "-"} - {
        int(v[1:].split(" ")[0]) for v in after.values() if v != "-"
    }
    if leaving:
        changes.append(
            f"after {ctx.settings.registry.drain_s:g} s of drain, Triton unloads "
            f"{', '.join(f'v{v}' for v in sorted(leaving))}"
        )
    blocked = any(not g.passed and not g.overridable for g in gates)
    needs_force = any(not g.passed and g.overridable for g in gates)
    return Plan(
        target=target,
        version=version,
        action=action,
        percent=percent,
        before=before,
        after=after,
        changes=changes,
        gates=gates,
        blocked=blocked or refusal is not None,
        needs_force=needs_force,
        refusal=refusal
        or next((g.detail for g in gates if not g.passed and not g.overridable), None),
    )


def act(
    ctx: ConsoleContext, actor: Actor, target: str, version: int, action: Action, body: ActionIn
) -> ActionResult:
    """Runs `action` through the promoter (gates, Triton, registry, gateways' confirmation).

    Raises:
        ConsoleError: 400 bad input (naming the field), 404 unknown target/version, 409 a gate
            or the version's stage refuses it (nothing changed), 502 Triton failed.
    """
    from scoring.registry.promotion import GateRefused
    from scoring.triton.control import ModelControlError

    record = record_of(ctx, target, version)
    reason = body.reason.strip()
    if body.force and not reason:
        raise ConsoleError(400, "reason: overriding a gate (force) needs a reason", "reason")
    if action == Action.CANARY and body.percent is None:
        raise ConsoleError(400, "percent: a canary needs its share of users (0-100]", "percent")
    progress: list[str] = []
    runner = promoter(ctx, actor, progress.append)
    try:
        if action == Action.PROMOTE:
            events = runner.promote(target, version, force=body.force, reason=reason)
        elif action == Action.CANARY:
            assert body.percent is not None
            events = runner.canary(target, version, body.percent, force=body.force, reason=reason)
        elif action == Action.SHADOW:
            events = runner.shadow(target, version, reason=reason)
        elif action == Action.STOP:
            events = runner.stop(target, version, reason=reason)
        else:
            events = runner.rollback(target, to=record.version, reason=reason)
    except GateRefused as exc:
        field = "force" if "--force" in str(exc) else "version"
        raise ConsoleError(409, str(exc), field) from None
    except RegistryError as exc:
        raise ConsoleError(409, str(exc), "version") from None
    except ModelControlError as exc:
        raise ConsoleError(
            502, f"triton: {exc} (the history shows what was recorded)", None
        ) from None
    return ActionResult(
        target=target,
        version=version,
        action=action,
        actor=actor.name,
        events=[EventView.of(e) for e in events],
        progress=progress,
        unconfirmed=list(runner.unconfirmed),
    )


@router.get("/api/v1/models/{target}/versions/{version}/plan", tags=["models"])
def api_plan(
    ctx: Ctx,
    target: str,
    version: int,
    action: Action,
    percent: Annotated[float | None, Query(gt=0, le=100)] = None,
) -> Plan:
    """What an action would change and the gates' verdict; changes nothing."""
    return plan(ctx, target, version, action, percent)


@router.post("/api/v1/models/{target}/versions/{version}/{action}", tags=["models"])
def api_act(
    ctx: Ctx, actor: Admin, target: str, version: int, action: Action, body: ActionIn
) -> ActionResult:
    """Promote, canary, shadow, stop or roll back to a version (admin only; audited)."""
    return act(ctx, actor, target, version, action, body)


@router.get(
    "/models/{target}/v{version}/{action}", response_class=HTMLResponse, include_in_schema=False
)
def confirm_page(
    request: Request,
    ctx: Ctx,
    login: MaybeLogin,
    target: str,
    version: int,
    action: Action,
    percent: Annotated[float | None, Query(gt=0, le=100)] = None,
) -> Response:
    p = plan(ctx, target, version, action, percent)
    return page(
        ctx,
        request,
        "confirm.html",
        login,
        p=p,
        csrf=login.csrf if login else "",
        csrf_field=CSRF_FIELD,
        error=None,
        reason="",
    )


@router.post(
    "/models/{target}/v{version}/{action}", response_class=HTMLResponse, include_in_schema=False
)
def act_form(
    request: Request,
    ctx: Ctx,
    login: MaybeLogin,
    actor: Admin,
    target: str,
    version: int,
    action: Action,
    reason: Annotated[str, Form(max_length=500)] = "",
    force: Annotated[bool, Form()] = False,
    percent: Annotated[float | None, Form(gt=0, le=100)] = None,
) -> Response:
    body = ActionIn(reason=reason, force=force, percent=percent)
    try:
        result = act(ctx, actor, target, version, action, body)
    except ConsoleError as exc:
        if exc.status not in (400, 409):
            raise
        p = plan(ctx, target, version, action, percent)
        return ctx.templates.TemplateResponse(
            request,
            "confirm.html",
            {
                "page": "models",
                "login": login,
                "p": p,
                "csrf": login.csrf if login else "",
                "csrf_field": CSRF_FIELD,
                "error": exc,
                "reason": reason,
            },
            status_code=exc.status,
        )
    return page(ctx, request, "acted.html", login, r=result, routing=_routing_of(ctx, target))
