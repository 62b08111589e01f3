"""`scoring models ...` and `scoring experiments ...`: what MLOps run every day."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from scoring.core.settings import Settings
from scoring.core.targets import TARGETS
from scoring.registry.promotion import Promoter
from scoring.registry.store import Registry, RegistryError, VersionRecord
from scoring.triton.control import ModelControlError, TritonControl

models_app = typer.Typer(
    help="The model registry: versions, stages, promotion, canary, shadow, rollback, audit.",
    no_args_is_help=True,
)
experiments_app = typer.Typer(help="Canary / A-B and shadow results.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 160)

Actor = Annotated[
    str | None, typer.Option(help="Who makes the change (audited); $SCORING_ACTOR or user@host.")
]
Reason = Annotated[str, typer.Option(help="Why (audited); required with --force.")]
NoTriton = Annotated[
    bool,
    typer.Option(
        "--registry-only",
        help="Change the registry only, do not drive Triton (it must already serve the version).",
    ),
]
SHOWN_METRICS = ("auc", "gauc", "logloss", "ndcg@10", "recall@20", "auc_vs_oracle")


def _settings() -> Settings:
    from scoring.cli import _settings as cli_settings

    return cli_settings()


def _target(name: str) -> str:
    if name not in TARGETS:
        raise typer.BadParameter(f"unknown target {name!r}; known: {sorted(TARGETS)}")
    return name


@contextmanager
def _registry(settings: Settings) -> Iterator[Registry]:
    registry = Registry(settings.registry.url)
    try:
        yield registry
    except RegistryError as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(1) from None
    except ModelControlError as exc:
        console.print(f"[red]triton:[/] {exc} (`scoring models history` shows what was recorded)")
        raise typer.Exit(1) from None
    finally:
        registry.close()


def _promoter(
    settings: Settings, registry: Registry, actor: str | None, registry_only: bool
) -> Promoter:
    from scoring.core.contract import contract_from_store
    from scoring.core.feature_repo import open_store
    from scoring.registry.promotion import Promoter, default_actor

    store = open_store(settings.feast.repo_path, settings.feast.fs_yaml)

    def live_schema(service: str) -> str:
        return contract_from_store(store, service).schema_hash

    return Promoter(
        settings,
        registry,
        live_schema,
        None if registry_only else TritonControl(settings.triton),
        actor or default_actor(),
        say=lambda message: console.print(f"  {message}"),
    )


@contextmanager
def _promoting(actor: str | None, registry_only: bool) -> Iterator[Promoter]:
    """A promoter on the configured registry (refusals print and exit 1)."""
    settings = _settings()
    with _registry(settings) as registry:
        yield _promoter(settings, registry, actor, registry_only)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _versions_table(records: list[VersionRecord]) -> Table:
    table = Table(title="model versions")
    for col in ("target", "version", "stage", "traffic", "AUC", "NDCG@10", "schema", "created"):
        table.add_column(col, justify="right" if col in ("version", "AUC", "NDCG@10") else "left")
    style = {"production": "bold green", "canary": "yellow", "shadow": "cyan", "archived": "dim"}
    for r in records:
        traffic = f"{r.traffic_percent:g}%" if r.traffic_percent else ""
        table.add_row(
            r.target,
            str(r.version),
            f"[{style.get(r.stage, '')}]{r.stage}[/]" if r.stage in style else str(r.stage),
            traffic,
            _fmt(r.metrics.get("auc")),
            _fmt(r.metrics.get("ndcg@10")),
            r.schema_hash[:12],
            f"{r.created_at:%Y-%m-%d %H:%M} by {r.created_by}",
        )
    return table


@models_app.command("list")
def models_list(
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
) -> None:
    """Every registered version with its stage and headline metrics."""
    settings = _settings()
    with _registry(settings) as registry:
        console.print(_versions_table(registry.versions(target and _target(target))))


@models_app.command("compare")
def models_compare(target: str, a: int, b: int) -> None:
    """Two versions' metrics side by side (b - a), with the promotion gate's verdict."""
    from scoring.registry.promotion import LOWER_IS_BETTER

    settings = _settings()
    with _registry(settings) as registry:
        ra, rb = registry.get(_target(target), a), registry.get(target, b)
        table = Table(title=f"{target}: v{a} vs v{b}")
        for col in ("metric", f"v{a} ({ra.stage})", f"v{b} ({rb.stage})", "b - a", "gate"):
            table.add_column(col, justify="left" if col in ("metric", "gate") else "right")
        tolerance = settings.registry.gate_tolerance
        for name in sorted(set(ra.metrics) | set(rb.metrics)):
            va, vb = ra.metrics.get(name, math.nan), rb.metrics.get(name, math.nan)
            gate = ""
            if name in settings.registry.gate_metrics:
                worse = (vb - va) if name in LOWER_IS_BETTER else (va - vb)
                gate = "[green]ok[/]" if worse <= tolerance else f"[red]worse > {tolerance}[/]"
            table.add_row(name, _fmt(va), _fmt(vb), _fmt(vb - va, 4), gate)
        table.add_row("feature schema", ra.schema_hash[:12], rb.schema_hash[:12], "", "")
        table.add_row("train window", f"{ra.train_start}", f"{rb.train_start}", "", "")
        console.print(table)


@models_app.command("promote")
def models_promote(
    target: str,
    version: int,
    force: Annotated[bool, typer.Option(help="Override the metric gate (needs --reason).")] = False,
    reason: Reason = "",
    actor: Actor = None,
    registry_only: NoTriton = False,
) -> None:
    """Make a version production: gates, load + warm up in Triton, switch, unload the old one."""
    with _promoting(actor, registry_only) as promoter:
        console.print(f"promoting {target} v{version}")
        promoter.promote(_target(target), version, force=force, reason=reason)
        console.print(f"[green]{target} v{version} is in production[/]")


@models_app.command("canary")
def models_canary(
    target: str,
    version: int,
    percent: Annotated[float, typer.Option(help="Share of users, sticky per user.")] = 10.0,
    salt: Annotated[
        str | None, typer.Option(help="Experiment salt; a new one reshuffles users.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Override the metric gate (needs --reason).")] = False,
    reason: Reason = "",
    actor: Actor = None,
    registry_only: NoTriton = False,
) -> None:
    """Serve a version to a percentage of users (sticky assignment), production to the rest."""
    with _promoting(actor, registry_only) as promoter:
        promoter.canary(_target(target), version, percent, force=force, reason=reason, salt=salt)
        console.print(f"[yellow]{target} v{version} is a {percent:g}% canary[/]")


@models_app.command("shadow")
def models_shadow(
    target: str,
    version: int,
    reason: Reason = "",
    actor: Actor = None,
    registry_only: NoTriton = False,
) -> None:
    """Score every request with a version too; its scores are logged, never returned."""
    with _promoting(actor, registry_only) as promoter:
        promoter.shadow(_target(target), version, reason=reason)
        console.print(f"[cyan]{target} v{version} runs in shadow[/]")


@models_app.command("stop")
def models_stop(
    target: str,
    version: int,
    reason: Reason = "",
    actor: Actor = None,
    registry_only: NoTriton = False,
) -> None:
    """End a canary or shadow (the version goes back to `registered`, Triton unloads it)."""
    with _promoting(actor, registry_only) as promoter:
        promoter.stop(_target(target), version, reason=reason)
        console.print(f"{target} v{version} stopped")


@models_app.command("rollback")
def models_rollback(
    target: str,
    to: Annotated[
        int | None, typer.Option(help="Version; the previous production by default.")
    ] = None,
    reason: Reason = "",
    actor: Actor = None,
    registry_only: NoTriton = False,
) -> None:
    """Put the previous production version (or --to) back into production, without downtime."""
    with _promoting(actor, registry_only) as promoter:
        events = promoter.rollback(_target(target), to=to, reason=reason)
        console.print(f"[green]{target} rolled back to v{events[-1].version}[/]")


@models_app.command("history")
def models_history(
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
    limit: int = 50,
) -> None:
    """The audit trail: every stage change, who made it, when and why."""
    settings = _settings()
    with _registry(settings) as registry:
        events = registry.history(target and _target(target))[-limit:]
        table = Table(title="stage changes (append-only audit)")
        for col in ("#", "at (UTC)", "target", "version", "change", "actor", "reason"):
            table.add_column(col)
        for e in events:
            change = f"{e.from_stage or '-'} -> {e.to_stage}"
            if e.traffic_percent:
                change += f" {e.traffic_percent:g}%"
            if e.forced:
                change += " [red](forced)[/]"
            table.add_row(
                str(e.id),
                f"{e.at:%Y-%m-%d %H:%M:%S}",
                e.target,
                str(e.version),
                change,
                e.actor,
                e.reason,
            )
        console.print(table)


def bootstrap(settings: Settings, registry: Registry, actor: str, newest: bool = False) -> None:
    """Promotes, for each target without a production version (with `newest`: whose production
    version is not the newest), its newest registered version through the gates. Registry only:
    Triton loads the production versions when it starts or on `scoring models sync`."""
    from scoring.registry.promotion import GateRefused

    promoter = _promoter(settings, registry, actor, registry_only=True)
    for name in TARGETS:
        versions = registry.versions(name)
        routing = registry.routing().targets.get(name)
        current = routing.production if routing else None
        if not versions:
            console.print(f"[yellow]{name}: no registered version; run scoring train[/]")
            continue
        latest = versions[-1]
        if current is not None and (not newest or current.version == latest.version):
            console.print(f"{name}: v{current.version} is in production")
            continue
        try:
            promoter.promote(name, latest.version, reason="newest version" if current else "first")
        except GateRefused as exc:
            console.print(f"[yellow]{name} v{latest.version} not promoted:[/] {exc}")


@models_app.command("bootstrap")
def models_bootstrap(actor: Actor = None) -> None:
    """Give each target without a production version its newest registered one (first deploy)."""
    settings = _settings()
    with _registry(settings) as registry:
        bootstrap(settings, registry, actor or "bootstrap")
        console.print(_versions_table(registry.versions()))


@models_app.command("sync")
def models_sync() -> None:
    """Load into Triton exactly the versions the registry serves (after a Triton restart)."""
    from scoring.registry.promotion import sync

    settings = _settings()
    control = TritonControl(settings.triton)
    with _registry(settings) as registry:
        for name in TARGETS:
            versions = sync(registry, control, name)
            console.print(f"{name}: {sorted(versions) or 'no registry version; left as loaded'}")


@experiments_app.command("report")
def experiments_report(
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
) -> None:
    """Per-arm traffic, latency, scores, CTR and conversion (95% Wilson intervals)."""
    from scoring.registry.experiments import arm_report, shadow_report

    settings = _settings()
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
        "target", "arm", "version", "requests", "users", "p50 ms", "p99 ms",
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
            f"{s.p50_ms:.1f}",
            f"{s.p99_ms:.1f}",
            "/".join(_fmt(q, 3) for q in s.top_score_quantiles),
            f"{s.ctr:.3f} [{lo:.3f}, {hi:.3f}]",
            f"{s.conversion:.3f} [{clo:.3f}, {chi:.3f}]",
            _fmt(s.ctr_p_value, 3),
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
                _fmt(sh.mean_abs_diff),
                _fmt(sh.spearman, 3),
                f"{sh.top1_agreement:.1%}",
                f"{sh.p50_ms:.1f}",
            )
        console.print(table)
