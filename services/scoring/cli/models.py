"""`scoring models ...`: the model registry, as MLOps use it every day."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.table import Table

from scoring import workflows
from scoring.cli.common import fmt_metric, load_settings, refusals, versions_table
from scoring.cli.common import wide_console as console
from scoring.core.access import Actor
from scoring.core.settings import Settings
from scoring.registry import Registry, RegistryError
from scoring.registry.promotion import Promoter
from scoring.triton.control import ModelControlError

app = typer.Typer(
    help="The model registry: versions, stages, promotion, canary, shadow, rollback, audit.",
    no_args_is_help=True,
)

# Who makes a change is an authenticated admin caller (the audit trail records its name), not a
# name given on the command line: with auth off, the change is recorded as not authenticated.
Token = Annotated[
    str | None,
    typer.Option(
        help="An admin caller's bearer token (default: $SCORING_AUTH__ADMIN_TOKEN); required "
        "when SCORING_AUTH__REQUIRED=true. The audit trail records that caller.",
        show_default=False,
    ),
]
NoTriton = Annotated[
    bool,
    typer.Option(
        "--registry-only",
        help="Change the registry only, do not drive Triton (it must already serve the version).",
    ),
]
Force = Annotated[bool, typer.Option(help="Override the metric gate (needs --reason).")]
GatedReason = Annotated[str, typer.Option(help="Why (audited); required with --force.")]
Reason = Annotated[str, typer.Option(help="Why (audited).")]
# A stage change: (promoter, its own arguments..., *, reason[, force]) -> the line to print.
Change = Callable[..., str]


def _audited_options(gated: bool) -> list[inspect.Parameter]:
    """The options every stage change takes, after its own: --force (where the metric gate
    applies), --reason, --token, --registry-only."""
    options: list[tuple[str, Any, Any]] = [("force", Force, False)] if gated else []
    options += [
        ("reason", GatedReason if gated else Reason, ""),
        ("token", Token, None),
        ("registry_only", NoTriton, False),
    ]
    keyword = inspect.Parameter.KEYWORD_ONLY
    return [inspect.Parameter(n, keyword, default=d, annotation=a) for n, a, d in options]


def _target(name: str) -> str:
    with refusals():
        return workflows.check_target(name)


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


def _say(message: str) -> None:
    """A promoter's progress line."""
    console.print(f"  {message}")


@contextmanager
def _promoting(token: str | None, registry_only: bool) -> Iterator[Promoter]:
    """A promoter on the configured registry (refusals print and exit 1), for the admin caller
    whose token is given; without an admin identity where auth is required, exit 2 before the
    registry is opened."""
    settings = load_settings()
    with refusals():
        actor = workflows.registry_actor(settings, token)
    with _registry(settings) as registry:
        with refusals():
            promoter = workflows.build_promoter(
                settings, registry, actor, registry_only=registry_only, say=_say
            )
        yield promoter


@app.command("list")
def models_list(
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
) -> None:
    """Every registered version with its stage and headline metrics."""
    settings = load_settings()
    with _registry(settings) as registry:
        console.print(versions_table(registry.versions(target and _target(target))))


@app.command("compare")
def models_compare(target: str, a: int, b: int) -> None:
    """Two versions' metrics side by side (b - a), with the promotion gate's verdict."""
    from scoring.registry.promotion import LOWER_IS_BETTER

    settings = load_settings()
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
            table.add_row(name, fmt_metric(va), fmt_metric(vb), fmt_metric(vb - va, 4), gate)
        table.add_row("feature schema", ra.schema_hash[:12], rb.schema_hash[:12], "", "")
        table.add_row("train window", f"{ra.train_start}", f"{rb.train_start}", "", "")
        console.print(table)


def _stage_change(name: str, *, gated: bool = False) -> Callable[[Change], Change]:
    """Registers `change(promoter, ..., reason=...)` as `scoring models <name>`: its own
    arguments, then the audited options of every stage change (--force first where the metric
    gate applies). The command runs it on a promoter and prints the line it returns."""

    def register(change: Change) -> Change:
        params = list(inspect.signature(change, eval_str=True).parameters.values())[1:]
        own = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]

        def command(token: str | None, registry_only: bool, **arguments: Any) -> None:
            with _promoting(token, registry_only) as promoter:
                console.print(change(promoter, **arguments))
            if promoter.unconfirmed:
                # Switched in the registry, but not every gateway confirmed: say so, and exit
                # non-zero so that a pipeline does not take it for a finished rollout.
                console.print(
                    f"[yellow]not confirmed by {', '.join(promoter.unconfirmed)}: the old "
                    "versions stay loaded; `scoring models sync` unloads them once every "
                    "gateway has switched[/]"
                )
                raise typer.Exit(3)

        signature = inspect.Signature([*own, *_audited_options(gated)])  # what typer reads
        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__doc__ = change.__doc__
        app.command(name)(command)
        return change

    return register


@_stage_change("promote", gated=True)
def _promote(promoter: Promoter, target: str, version: int, *, force: bool, reason: str) -> str:
    """Make a version production: gates, load + warm up in Triton, switch, unload the old one."""
    console.print(f"promoting {target} v{version}")
    promoter.promote(_target(target), version, force=force, reason=reason)
    return f"[green]{target} v{version} is in production[/]"


@_stage_change("canary", gated=True)
def _canary(
    promoter: Promoter,
    target: str,
    version: int,
    percent: Annotated[float, typer.Option(help="Share of users, sticky per user.")] = 10.0,
    salt: Annotated[
        str | None, typer.Option(help="Experiment salt; a new one reshuffles users.")
    ] = None,
    *,
    force: bool,
    reason: str,
) -> str:
    """Serve a version to a percentage of users (sticky assignment), production to the rest."""
    promoter.canary(_target(target), version, percent, force=force, reason=reason, salt=salt)
    return f"[yellow]{target} v{version} is a {percent:g}% canary[/]"


@_stage_change("shadow")
def _shadow(promoter: Promoter, target: str, version: int, *, reason: str) -> str:
    """Score every request with a version too; its scores are logged, never returned."""
    promoter.shadow(_target(target), version, reason=reason)
    return f"[cyan]{target} v{version} runs in shadow[/]"


@_stage_change("stop")
def _stop(promoter: Promoter, target: str, version: int, *, reason: str) -> str:
    """End a canary or shadow (the version goes back to `registered`, Triton unloads it)."""
    promoter.stop(_target(target), version, reason=reason)
    return f"{target} v{version} stopped"


@_stage_change("rollback")
def _rollback(
    promoter: Promoter,
    target: str,
    to: Annotated[
        int | None, typer.Option(help="Version; the previous production by default.")
    ] = None,
    *,
    reason: str,
) -> str:
    """Put the previous production version (or --to) back into production, without downtime."""
    events = promoter.rollback(_target(target), to=to, reason=reason)
    return f"[green]{target} rolled back to v{events[-1].version}[/]"


@app.command("history")
def models_history(
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
    limit: int = 50,
) -> None:
    """The audit trail: every stage change, who made it, when and why."""
    settings = load_settings()
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


def bootstrap(
    settings: Settings, registry: Registry, actor: Actor | None = None, newest: bool = False
) -> None:
    """Runs the bootstrap workflow, printing the promotions and each target's outcome."""
    workflows.bootstrap(
        settings, registry, actor, newest=newest, say=_say, on_outcome=_print_outcome
    )


def _print_outcome(outcome: workflows.BootstrapOutcome) -> None:
    name, version = outcome.target, outcome.version
    if outcome.status == "no version":
        console.print(f"[yellow]{name}: no registered version; run scoring train[/]")
    elif outcome.status == "in production":
        console.print(f"{name}: v{version} is in production")
    elif outcome.status == "refused":
        console.print(f"[yellow]{name} v{version} not promoted:[/] {outcome.detail}")


@app.command("bootstrap")
def models_bootstrap(token: Token = None) -> None:
    """Give each target without a production version its newest registered one (first deploy)."""
    settings = load_settings()
    with refusals():
        actor = workflows.registry_actor(settings, token)
    with _registry(settings) as registry, refusals():
        bootstrap(settings, registry, actor)
        console.print(versions_table(registry.versions()))


@app.command("sync")
def models_sync() -> None:
    """Load into Triton exactly the versions the registry serves (after a Triton restart)."""
    settings = load_settings()
    with _registry(settings) as registry:
        for name, versions in workflows.sync_triton(settings, registry).items():
            console.print(f"{name}: {versions or 'no registry version; left as loaded'}")
