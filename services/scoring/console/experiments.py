"""The console's experiments area: per target, each arm's traffic, feedback, CTR and conversion
with 95% Wilson intervals and p-value against production, the same figures over time as
charts (per hour or day, or cumulatively), and the shadow versions' agreement with the served
one. Read from the gateways' served-event log (scoring.registry.experiments), as
`scoring experiments report` reads it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from pydantic import BaseModel

from scoring.console.auth import Login, current_login
from scoring.console.charts import Series, line_chart
from scoring.console.context import ConsoleContext, ConsoleError, get_context
from scoring.core.json_safe import finite
from scoring.core.targets import TARGETS
from scoring.registry.experiments import (
    BUCKET_SECONDS,
    ArmStats,
    ArmTimeline,
    Bucket,
    Counts,
    ShadowStats,
    arm_report,
    arm_timeline,
    shadow_report,
)

router = APIRouter()

Ctx = Annotated[ConsoleContext, Depends(get_context)]
CurrentLogin = Annotated[Login | None, Depends(current_login)]

HOW_TO_GET_EVENTS = (
    "Serve traffic through a gateway (`make demo`, or `scoring serve gateway` and Rank "
    "requests): it logs which arm and version answered each request. Then send Feedback "
    "(clicks, purchases) with the request id and a returned candidate id (docs/callers.md): "
    "CTR and conversion count the requests with such feedback."
)


class CountsOut(BaseModel):
    """Requests, the feedback events on candidates they returned, and the requests with a click
    (CTR) or purchase (conversion), with 95% Wilson intervals (None without requests)."""

    requests: int
    feedback_events: int
    clicked: int
    purchased: int
    ctr: float | None
    ctr_low: float | None
    ctr_high: float | None
    conversion: float | None
    conversion_low: float | None
    conversion_high: float | None

    @classmethod
    def of(cls, c: Counts | ArmStats) -> CountsOut:
        some = c.requests > 0
        ctr_lo, ctr_hi = c.ctr_ci
        conv_lo, conv_hi = c.conversion_ci
        return cls(
            requests=c.requests,
            feedback_events=c.feedback_events,
            clicked=c.clicked,
            purchased=c.purchased,
            ctr=finite(c.ctr),
            ctr_low=ctr_lo if some else None,
            ctr_high=ctr_hi if some else None,
            conversion=finite(c.conversion),
            conversion_low=conv_lo if some else None,
            conversion_high=conv_hi if some else None,
        )


class ArmOut(CountsOut):
    """One arm (target, arm, version) over the whole log."""

    target: str
    arm: str
    version: str
    users: int
    ctr_p_value: float | None  # two-proportion z-test vs production in the arm's time window
    p50_ms: float | None
    p99_ms: float | None
    mean_top_score: float | None

    @classmethod
    def of_arm(cls, s: ArmStats) -> ArmOut:
        return cls(
            **CountsOut.of(s).model_dump(),
            target=s.target,
            arm=s.arm,
            version=s.version,
            users=s.users,
            ctr_p_value=finite(s.ctr_p_value),
            p50_ms=finite(s.p50_ms),
            p99_ms=finite(s.p99_ms),
            mean_top_score=finite(s.mean_top_score),
        )


class PointOut(BaseModel):
    """One bucket: the requests served in it (and their feedback, whenever it came), and the
    arm's running totals up to its end."""

    start: datetime
    end: datetime
    window: CountsOut
    cumulative: CountsOut


class ArmTimelineOut(BaseModel):
    arm: str
    version: str
    points: list[PointOut]


class ShadowOut(BaseModel):
    """A shadow version's scores against the served version's on the same requests."""

    version: str
    primary_version: str
    requests: int
    mean_abs_diff: float | None
    spearman: float | None
    top1_agreement: float | None
    p50_ms: float | None

    @classmethod
    def of(cls, s: ShadowStats) -> ShadowOut:
        return cls(
            version=s.version,
            primary_version=s.primary_version,
            requests=s.requests,
            mean_abs_diff=finite(s.mean_abs_diff),
            spearman=finite(s.spearman),
            top1_agreement=finite(s.top1_agreement),
            p50_ms=finite(s.p50_ms),
        )


class TargetExperiments(BaseModel):
    target: str
    arms: list[ArmOut]  # production first
    timeline: list[ArmTimelineOut]  # the same arms, in the same order
    shadows: list[ShadowOut]


class ExperimentsOut(BaseModel):
    """What the gateways' served-event log says about every arm of every target (or one)."""

    events_dir: str
    target: str | None  # the filter, if any
    bucket: Bucket  # the timeline's: asked for, or chosen from the span of the requests
    bucket_seconds: int
    targets: list[TargetExperiments]  # targets with served requests or shadow scores
    has_events: bool
    how_to: str | None  # how to get events, where there are none


def _target(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if value not in TARGETS:
        raise ConsoleError(404, f"target: unknown {value!r} ({', '.join(TARGETS)})", "target")
    return value


def _bucket(value: str | None) -> Bucket | None:
    if value is None or value in ("", "auto"):
        return None
    if value == "hour":
        return "hour"
    if value == "day":
        return "day"
    raise ConsoleError(400, f"bucket: must be hour, day or auto, not {value!r}", "bucket")


def experiments(ctx: ConsoleContext, target: str | None, bucket: str | None) -> ExperimentsOut:
    """Arms, timelines and shadows per target, from the configured events dir.

    Raises:
        ConsoleError: 404 for an unknown target, 400 for a bucket other than hour/day/auto.
    """
    tgt, asked = _target(target), _bucket(bucket)
    events_dir = ctx.settings.gateway.events_dir
    arms = arm_report(events_dir, tgt)
    timeline = arm_timeline(events_dir, tgt, asked)
    shadows = shadow_report(events_dir, tgt)
    lines: dict[tuple[str, str, str], ArmTimeline] = {
        (a.target, a.arm, a.version): a for a in timeline.arms
    }
    names = sorted({a.target for a in arms} | {s.target for s in shadows})
    out = []
    for name in names:
        mine = [a for a in arms if a.target == name]
        out.append(
            TargetExperiments(
                target=name,
                arms=[ArmOut.of_arm(a) for a in mine],
                timeline=[
                    ArmTimelineOut(
                        arm=a.arm,
                        version=a.version,
                        points=[
                            PointOut(
                                start=datetime.fromtimestamp(p.start, UTC),
                                end=datetime.fromtimestamp(p.end, UTC),
                                window=CountsOut.of(p.window),
                                cumulative=CountsOut.of(p.cumulative),
                            )
                            for p in lines[(a.target, a.arm, a.version)].points
                        ],
                    )
                    for a in mine
                ],
                shadows=[ShadowOut.of(s) for s in shadows if s.target == name],
            )
        )
    has_events = bool(out)
    return ExperimentsOut(
        events_dir=str(events_dir),
        target=tgt,
        bucket=timeline.bucket,
        bucket_seconds=BUCKET_SECONDS[timeline.bucket],
        targets=out,
        has_events=has_events,
        how_to=None if has_events else HOW_TO_GET_EVENTS,
    )


def arm_label(arm: str, version: str) -> str:
    """How a page names an arm: `canary v4`, or `fallback` (popularity, no version)."""
    return f"{arm} v{version}" if version else arm


def charts(t: TargetExperiments, bucket: str, cumulative: bool) -> dict[str, Markup]:
    """The target's charts: CTR and conversion with their 95% bands (cumulative or per
    bucket), and requests per bucket, one line per arm."""
    per = f"per {bucket}"
    how = "cumulative" if cumulative else per

    def rate(key: str) -> list[Series]:
        series = []
        for line in t.timeline:
            points, band = [], []
            for p in line.points:
                c = p.cumulative if cumulative else p.window
                value = getattr(c, key)
                low, high = getattr(c, f"{key}_low"), getattr(c, f"{key}_high")
                # Cumulative figures hold at the bucket's end, a bucket's at its start.
                x = (p.end if cumulative else p.start).timestamp()
                if value is not None and low is not None and high is not None:
                    points.append((x, value))
                    band.append((x, low, high))
            series.append(Series(arm_label(line.arm, line.version), points, band))
        return series

    requests = [
        Series(
            arm_label(line.arm, line.version),
            [(p.start.timestamp(), float(p.window.requests)) for p in line.points],
        )
        for line in t.timeline
    ]
    return {
        "ctr": line_chart(
            rate("ctr"),
            title=f"{t.target}: CTR ({how}, 95% interval)",
            y_label="CTR",
            x_is_time=True,
        ),
        "conversion": line_chart(
            rate("conversion"),
            title=f"{t.target}: conversion ({how}, 95% interval)",
            y_label="conversion",
            x_is_time=True,
        ),
        "requests": line_chart(
            requests,
            title=f"{t.target}: requests {per}",
            y_label="requests",
            x_is_time=True,
            y_format="{:,.0f}",
        ),
    }


@router.get("/api/v1/experiments", response_model=ExperimentsOut, tags=["experiments"])
def experiments_api(
    ctx: Ctx, target: str | None = None, bucket: str | None = None
) -> ExperimentsOut:
    """Per target: each arm's requests, users, feedback events, clicks, purchases, CTR and
    conversion with 95% Wilson intervals, p-value against production and latency; the same per
    hour or day (`bucket`: hour, day, or chosen from the span) and cumulatively; the shadows."""
    return experiments(ctx, target, bucket)


@router.get("/experiments", response_class=HTMLResponse, include_in_schema=False)
def experiments_page(
    request: Request,
    ctx: Ctx,
    login: CurrentLogin,
    target: str | None = None,
    bucket: str | None = None,
    cumulative: bool = True,
) -> Response:
    data = experiments(ctx, target, bucket)
    context: dict[str, Any] = {
        "page": "experiments",
        "login": login,
        "data": data,
        "known_targets": list(TARGETS),
        "asked_bucket": bucket or "auto",
        "cumulative": cumulative,
        "charts": {t.target: charts(t, data.bucket, cumulative) for t in data.targets},
    }
    return ctx.templates.TemplateResponse(request, "experiments.html", context)
