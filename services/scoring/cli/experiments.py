"""`scoring experiments ...`: what canaries, A/B arms and shadows did with real traffic."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from scoring.cli.common import fmt_metric, load_settings
from scoring.cli.common import wide_console as console

app = typer.Typer(help="Canary / A-B and shadow results.", no_args_is_help=True)


@app.command("report")
def experiments_report(
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
) -> None:
    """Per-arm traffic, latency, scores, CTR and conversion (95% Wilson intervals)."""
    from scoring.registry.experiments import arm_report, shadow_report

    settings = load_settings()
    events_dir = settings.gateway.events_dir
    arms = arm_report(events_dir, target)
    if not arms:
        console.print(f"no served requests logged under {events_dir}")
        raise typer.Exit(1)
    table = Table(
        title=f"experiment arms ({events_dir})",
        caption="unit: request; CTR = requests with a click on a returned candidate; "
        "p: two-proportion z-test vs production",
    )
    for col in (
        "target", "arm", "version", "requests", "users", "feedback", "p50 ms", "p99 ms",
        "top score p10/p50/p90",
        "CTR [95% CI]", "conversion [95% CI]", "p vs prod",
    ):  # fmt: skip
        table.add_column(col, justify="left" if col in ("target", "arm") else "right")
    for s in arms:
        lo, hi = s.ctr_ci
        clo, chi = s.conversion_ci
        table.add_row(
            s.target,
            s.arm,
            s.version or "-",
            f"{s.requests:,}",
            f"{s.users:,}",
            f"{s.feedback_events:,}",
            f"{s.p50_ms:.1f}",
            f"{s.p99_ms:.1f}",
            "/".join(fmt_metric(q, 3) for q in s.top_score_quantiles),
            f"{s.ctr:.3f} [{lo:.3f}, {hi:.3f}]",
            f"{s.conversion:.3f} [{clo:.3f}, {chi:.3f}]",
            fmt_metric(s.ctr_p_value, 3),
        )
    console.print(table)
    shadows = shadow_report(events_dir, target)
    if shadows:
        table = Table(title="shadow versions (scored, logged, never returned)")
        for col in (
            "target", "shadow", "served", "requests", "mean |score diff|", "Spearman",
            "same top-1", "p50 ms",
        ):  # fmt: skip
            table.add_column(col)
        for sh in shadows:
            table.add_row(
                sh.target,
                sh.version,
                sh.primary_version,
                f"{sh.requests:,}",
                fmt_metric(sh.mean_abs_diff),
                fmt_metric(sh.spearman, 3),
                f"{sh.top1_agreement:.1%}",
                f"{sh.p50_ms:.1f}",
            )
        console.print(table)
