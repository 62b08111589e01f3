"""`scoring`: one subcommand per step or process of the platform. `scoring --help` lists them."""

from __future__ import annotations

import signal
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from scoring.api.v1 import scoring_pb2 as pb
from scoring.core.settings import Settings
from scoring.core.targets import TARGETS, CandidateKind
from scoring.registry.cli import experiments_app, models_app

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Data sets for the feature store and training.", no_args_is_help=True)
features_app = typer.Typer(help="The Feast feature repository.", no_args_is_help=True)
serve_app = typer.Typer(help="Run a server in the foreground.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(serve_app, name="serve")
app.add_typer(models_app, name="models")
app.add_typer(experiments_app, name="experiments")
# Wide enough for the tables when output is piped (CI logs, tests).
console = Console(width=None if sys.stdout.isatty() else 120)


def _quiet_libraries() -> None:
    """Hide library warnings that say nothing to a user of this CLI."""
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning
    )
    warnings.filterwarnings(
        "ignore", message="Discarding nonzero nanoseconds", category=UserWarning
    )
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")


def _settings() -> Settings:
    from scoring.core.logging import configure_logging

    _quiet_libraries()
    settings = Settings()
    configure_logging("WARNING", settings.log_json)
    return settings


def _build_progress(title: str) -> tuple[Progress, Callable[[str], None]]:
    """A progress bar over the feature build's steps, and the callback that advances it."""
    from scoring.datagen.build import BUILD_STEPS

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    )
    task = progress.add_task(title, total=len(BUILD_STEPS))

    def step(name: str) -> None:
        progress.update(task, description=f"{title}: {name}", completed=BUILD_STEPS.index(name))

    return progress, step


def _print_data_set(title: str, data: Any) -> None:
    table = Table(title=f"{title} (newest event {data.end:%Y-%m-%d %H:%M} UTC)")
    for col in ("table", "rows", "file"):
        table.add_column(col)
    for path, (name, df) in zip(data.paths, data.tables.items(), strict=True):
        table.add_row(name, f"{len(df):,}", str(path))
    console.print(table)


@data_app.command("generate")
def data_generate(
    users: int = 1000,
    items: int = 500,
    activities: int = 60,
    item_impressions: int = 40_000,
    activity_impressions: int = 40_000,
    days: int = 35,
    seed: int = 7,
    large: Annotated[
        bool, typer.Option(help="About 3 million events (50k users, 10k items, 8 weeks).")
    ] = False,
) -> None:
    """Generate a synthetic e-commerce event stream and build the feature tables from it."""
    from scoring.datagen.dataset import build_data_set
    from scoring.datagen.synthetic import SyntheticConfig, generate

    settings = _settings()
    cfg = (
        SyntheticConfig.large(seed)
        if large
        else SyntheticConfig(
            users, items, activities, item_impressions, activity_impressions, days, seed=seed
        )
    )
    with console.status("simulating the event stream"):
        log = generate(cfg)
    console.print(f"{len(log.events):,} events, {log.events['user_id'].nunique():,} users")
    progress, step = _build_progress("features")
    with progress:
        data = build_data_set(log, settings.feast.repo_path / "data", progress=step)
    _print_data_set("synthetic data", data)


@data_app.command("import")
def data_import(
    events: Annotated[Path, typer.Argument(help="Event log, .csv or .parquet.")],
    items: Annotated[Path | None, typer.Option(help="Item attributes table.")] = None,
    users: Annotated[Path | None, typer.Option(help="User attributes table.")] = None,
    activities: Annotated[Path | None, typer.Option(help="Campaigns table.")] = None,
) -> None:
    """Validate your own event log and build the feature tables from it (README: own data)."""
    from scoring.datagen.importer import ImportValidationError, import_data_set

    settings = _settings()
    progress, step = _build_progress("features")
    try:
        with progress:
            data = import_data_set(
                settings.feast.repo_path / "data", events, items, users, activities, step
            )
    except ImportValidationError as exc:
        console.print(f"[red]import refused[/]: {exc}", markup=False, highlight=False)
        raise typer.Exit(code=2) from None
    _print_data_set(f"imported {events.name}", data)


@data_app.command("public")
def data_public(
    name: Annotated[str, typer.Argument(help="ta-feng or online-retail (docs/data.md).")],
    raw: Annotated[Path, typer.Option(help="The raw file as published.")],
    out: Annotated[Path, typer.Option(help="Folder for events/items/users.parquet.")],
    slice_: Annotated[bool, typer.Option("--slice", help="Only the fixture's slice.")] = False,
) -> None:
    """Convert a public real retail log into the import format (docs/data.md)."""
    from scoring.datagen.public_logs import PublicLogError, run

    try:
        run(name, raw, out, slice_, console)
    except PublicLogError as exc:
        console.print(f"conversion refused: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(code=2) from None


@features_app.command("apply")
def features_apply() -> None:
    """Register the feature definitions (`feast apply`)."""
    from scoring.core import feature_repo

    settings = _settings()
    with console.status("feast apply"):
        feature_repo.apply(settings.feast.repo_path, settings.feast.fs_yaml)
    console.print(f"[green]applied[/] feature repo {settings.feast.repo_path}")


@features_app.command("materialize")
def features_materialize(
    full: Annotated[
        bool, typer.Option(help="Reload every view over its TTL (e.g. after adding a feature).")
    ] = False,
) -> None:
    """Load new feature rows into the online store (`feast materialize-incremental`, up to now)."""
    from scoring.core import feature_repo

    settings = _settings()
    with console.status("materializing into the online store"):
        end = feature_repo.materialize(
            settings.feast.repo_path, fs_yaml=settings.feast.fs_yaml, full=full
        )
    console.print(f"[green]materialized[/] up to {end:%Y-%m-%d %H:%M:%S} UTC")


@features_app.command("contract")
def features_contract(service: str) -> None:
    """Print a FeatureService's contract: ordered features, dtypes, defaults, schema hash."""
    from scoring.core.contract import contract_from_store
    from scoring.core.feature_repo import open_store

    settings = _settings()
    store = open_store(settings.feast.repo_path, settings.feast.fs_yaml)
    contract = contract_from_store(store, service)
    table = Table(title=f"{contract.service}: schema {contract.schema_hash}")
    for col in ("#", "feature", "dtype", "default", "entity", "columns"):
        table.add_column(col)
    for i, f in enumerate(contract.features):
        table.add_row(
            str(i),
            f.ref,
            f.dtype,
            f"{f.default:g}",
            f.entity or "(request time)",
            str(f.length),
        )
    console.print(table)
    console.print(
        f"model input: {contract.value_width} value columns + {len(contract.features)} "
        f"missing indicators = {contract.width}"
    )
    console.print(f"request fields: {', '.join(contract.request_fields) or '-'}")


def _train(
    settings: Settings,
    targets: list[str],
    epochs: int,
    device: str = "cpu",
    seed: int = 7,
    report: bool = False,
    holdout: Any = "none",
) -> None:
    from scoring.core.feature_repo import open_store
    from scoring.registry import Registry
    from scoring.registry.promotion import default_actor, register_version
    from scoring.trainer.report import report_tables
    from scoring.trainer.train import TrainConfig, train_target

    store = open_store(settings.feast.repo_path, settings.feast.fs_yaml)
    registry = Registry(settings.registry.url)
    cfg = TrainConfig(epochs=epochs, device=device, seed=seed)
    table = Table(title="trained models (test split: the latest 20% of time)")
    columns = ("target", "version", "rows", "test AUC", "oracle AUC", "AUC/oracle", "NDCG@10")
    for col in (*columns, "popularity", "top category", "time"):
        table.add_column(col, justify="right" if col != "target" else "left")
    reports = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        # Steps: training set, each epoch, evaluation, export.
        offsets = {"training set": 0, "fit": 1, "evaluate": epochs + 1, "export": epochs + 2}
        for name in targets:
            task = progress.add_task(f"{name}: training set", total=epochs + 3, note="")

            def on_progress(
                stage: str, done: int, total: int, note: str, task: TaskID = task, name: str = name
            ) -> None:
                progress.update(
                    task,
                    description=f"{name}: {stage}",
                    completed=offsets.get(stage, 0) + done,
                    note=note,
                )

            started = time.monotonic()
            result = train_target(
                store,
                TARGETS[name],
                settings.feast.repo_path,
                settings.triton.model_repository,
                cfg,
                on_progress=on_progress,
                implicit=settings.training.implicit.get(name),
                holdout=holdout,
            )
            register_version(
                registry,
                settings.triton.model_repository,
                name,
                result.version,
                result.manifest,
                f"trainer ({default_actor()})",
            )
            m = result.metrics
            training = result.manifest["training"]
            table_ = result.manifest.get("evaluation", {}).get("table", {})
            oracle = m.get("oracle_auc", float("nan"))
            table.add_row(
                name,
                f"{result.version}" + ("" if result.created else " (unchanged)"),
                f"{training['train_rows'] + training['test_rows']:,}",
                f"{m['auc']:.4f}",
                f"{oracle:.4f}",
                f"{m['auc'] / oracle:.3f}",
                f"{m.get('ndcg@10', float('nan')):.4f}",
                f"{table_.get('popularity', {}).get('ndcg@10', float('nan')):.4f}",
                f"{table_.get('user_top_category', {}).get('ndcg@10', float('nan')):.4f}",
                f"{time.monotonic() - started:.1f}s",
            )
            reports.append(result.manifest)
    registry.close()
    console.print(table)
    console.print(
        "versions are registered (stage: registered); promote one with "
        "[bold]scoring models promote <target> <version>[/]"
    )
    if report:
        for manifest in reports:
            for t in report_tables(manifest):
                console.print(t)
    else:
        console.print("full evaluation and baselines: [bold]scoring report <target>[/]")


@app.command()
def train(
    target: Annotated[
        list[str] | None, typer.Option(help="Model target(s); all by default.")
    ] = None,
    epochs: int = 20,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1 ...")] = "cpu",
    seed: int = 7,
    report: Annotated[bool, typer.Option(help="Print each version's full report.")] = True,
    holdout: Annotated[
        str, typer.Option(help="none, or loo/time: leave out what `scoring evaluate` holds out.")
    ] = "none",
) -> None:
    """Train model target(s) from Feast and write a new version into the model repository."""
    settings = _settings()
    names = target or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise typer.BadParameter(f"unknown target(s) {unknown}; known: {sorted(TARGETS)}")
    _check_device(device)
    from scoring.trainer.implicit import HOLDOUTS, TrainingDataError

    if holdout not in HOLDOUTS:
        raise typer.BadParameter(f"{holdout!r} is not one of {HOLDOUTS}", param_hint="--holdout")
    try:
        _train(settings, names, epochs, device, seed, report, holdout)
    except TrainingDataError as exc:
        console.print(f"train refused: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(code=2) from None


def _check_device(device: str) -> None:
    """Refuses a torch device this machine cannot train on, before any data is read."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as exc:
        raise typer.BadParameter(
            f"{device!r} is not a torch device ({exc})", param_hint="--device"
        ) from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise typer.BadParameter(
            f"{device!r}: no CUDA device here (torch {torch.__version__}, "
            f"torch.cuda.is_available() is False); use --device cpu",
            param_hint="--device",
        )


def _trained_version(target: str, version: int | None) -> tuple[Path, int]:
    """A target's model folder and the trained version asked for (the latest by default)."""
    from scoring.trainer.export import list_versions

    if target not in TARGETS:
        raise typer.BadParameter(f"unknown target {target!r}; known: {sorted(TARGETS)}")
    model_dir = _settings().triton.model_repository / target
    versions = list_versions(model_dir)
    if not versions or (version is not None and version not in versions):
        wanted = "no trained version" if version is None else f"no version {version}"
        raise typer.BadParameter(f"{wanted} (have {versions}) in {model_dir}; `scoring train`")
    return model_dir, versions[-1] if version is None else version


@app.command()
def report(
    target: str,
    version: Annotated[int | None, typer.Option(help="Version; the latest by default.")] = None,
) -> None:
    """Print a trained version's report: data, metrics vs baselines and oracle, feature groups."""
    from scoring.trainer.export import read_manifest
    from scoring.trainer.report import report_tables

    model_dir, chosen = _trained_version(target, version)
    manifest = read_manifest(model_dir, chosen)
    if "evaluation" not in manifest:
        raise typer.BadParameter(f"{target} v{manifest['version']}: manifest has no evaluation")
    for table in report_tables(manifest):
        console.print(table)


@app.command()
def evaluate(
    protocol: Annotated[
        str, typer.Option(help="loo (leave-one-out) or time (time split).")
    ] = "loo",
    negatives: Annotated[int, typer.Option(help="Sampled negatives per held-out item.")] = 100,
    seed: int = 0,
    max_users: Annotated[int, typer.Option(help="Seeded sample of users; 0: all.")] = 5000,
    full_catalogue: Annotated[bool, typer.Option(help="Also rank over all items.")] = False,
    out: Annotated[Path | None, typer.Option(help="Report (.md, and .json beside it).")] = None,
    target: str = "item_ranker",
    version: Annotated[int | None, typer.Option(help="Version; the latest by default.")] = None,
    baselines_only: bool = False,
) -> None:
    """Offline evaluation on your own log (HR@10, NDCG@10, Recall@20, MRR) beside baselines."""
    from scoring.evaluation.run import EvaluationError, run_evaluation

    args = (protocol, negatives, seed, max_users, full_catalogue, out, target, version)
    try:
        run_evaluation(_settings(), console, *args, baselines_only=baselines_only)
    except EvaluationError as exc:
        console.print(f"evaluate refused: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(code=2) from None


@app.command("model-latency")
def model_latency(
    target: Annotated[str, typer.Option(help="Model target.")] = "item_ranker",
    version: Annotated[int | None, typer.Option(help="Version; the latest by default.")] = None,
    device: Annotated[
        list[str] | None,
        typer.Option(help="torch device(s); the CPU, and the GPU where there is one, by default."),
    ] = None,
    batch: Annotated[list[int] | None, typer.Option(help="Batch size(s).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed calls a cell.")] = 200,
    threads: Annotated[int, typer.Option(min=1, help="CPU intra-op threads (1: as served).")] = 1,
    out: Annotated[Path | None, typer.Option(help="Also write the table as Markdown.")] = None,
) -> None:
    """Time a trained version's TorchScript model by batch size, on the CPU and a GPU."""
    import torch

    from scoring.trainer.export import MODEL_FILE, read_manifest
    from scoring.trainer.latency import BATCHES, devices_here, measure

    model_dir, chosen = _trained_version(target, version)
    devices = device or devices_here()
    for name in devices:
        _check_device(name)
    batches = batch or list(BATCHES)
    if any(b < 1 for b in batches):
        raise typer.BadParameter(f"{batches}: batch sizes must be at least 1", param_hint="--batch")
    n_features = len(read_manifest(model_dir, chosen)["model"]["columns"])
    rows = measure(
        model_dir / str(chosen) / MODEL_FILE, n_features, devices, batches, repeats, 20, threads
    )
    cpu = {r.batch: r.compute_p50_ms for r in rows if r.device == "cpu"}
    title = f"{target} v{chosen}: {n_features} inputs, {repeats} calls a cell, ms (p50 / p99)"
    table = Table(title=title)
    header = ("device", "batch", "model call", "with copies in/out", "rows/s", "vs CPU p50")
    for col in header:
        table.add_column(col, justify="right")
    lines = [f"{title}, torch {torch.__version__}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    for r in rows:
        base = cpu.get(r.batch)
        cells = (
            r.device,
            str(r.batch),
            f"{r.compute_p50_ms:.3f} / {r.compute_p99_ms:.3f}",
            f"{r.copy_p50_ms:.3f} / {r.copy_p99_ms:.3f}",
            f"{r.rows_per_s:,.0f}",
            f"{base / r.compute_p50_ms:.1f}x" if base else "-",
        )
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    if out is not None:
        out.write_text("\n".join(lines) + "\n")
        console.print(f"wrote {out}")


@serve_app.command("triton")
def serve_triton() -> None:
    """Run the local Triton server (CPU, python backend) until Ctrl-C."""
    from scoring.triton.server import TritonServer

    settings = _settings()
    # SIGTERM (docker stop, kill) stops Triton and its stubs too, like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = TritonServer(settings.triton, list(TARGETS))
    with server:
        for name, versions in _sync_triton(settings).items():
            console.print(f"{name}: registry versions {versions or 'none; latest on disk'} loaded")
        console.print(f"[green]triton ready[/] on {settings.triton.url} (log {server.log_path})")
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


def _sync_triton(settings: Settings) -> dict[str, list[int]]:
    """Loads the registry's serving versions into a freshly started Triton."""
    from scoring.registry import Registry
    from scoring.registry.promotion import sync
    from scoring.triton.control import TritonControl

    control = TritonControl(settings.triton)
    with Registry(settings.registry.url) as registry:
        return {name: sorted(sync(registry, control, name)) for name in TARGETS}


@serve_app.command("gateway")
def serve_gateway() -> None:
    """Run the gRPC gateway until Ctrl-C."""
    from scoring.core.logging import configure_logging
    from scoring.gateway.server import run

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json, background=True)
    run(settings)


def _print_ranking(title: str, response: pb.RankResponse) -> None:
    table = Table(title=title, caption=_caption(response))
    for col in ("rank", "candidate", "score", "why (top feature groups, logit)", "note"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for c in response.candidates:
        why = ", ".join(f"{r.group} {r.contribution:+.2f}" for r in c.reasons[:2])
        note = "unknown: defaults used" if c.unknown else ""
        table.add_row(str(c.rank), c.id, f"{c.score:.4f}", why, note)
    for f in response.filtered:
        table.add_row("-", f.id, "-", "", f"filtered: {f.reason}")
    console.print(table)


def _caption(r: pb.RankResponse) -> str:
    flags = " | unknown user: defaults used" if r.unknown_user else ""
    if r.degraded:
        flags += " | degraded: " + "; ".join(r.degradations)
    return (
        f"model {r.model_name} v{r.model_version} | features {r.feature_service} | "
        f"request {r.request_id[:8]}{flags}"
    )


@app.command()
def rank(
    user_id: str,
    candidates: Annotated[list[str], typer.Argument(help="Candidate ids.")],
    kind: CandidateKind = CandidateKind.ITEM,
    top_k: int = 0,
    address: Annotated[str | None, typer.Option(help="Gateway host:port.")] = None,
) -> None:
    """Send one Rank request to a running gateway and print the ranking."""
    from scoring.client import RankingClient

    settings = _settings()
    with RankingClient(address or f"{settings.gateway.host}:{settings.gateway.port}") as client:
        _print_ranking(
            f"{kind.value}s for {user_id}", client.rank(user_id, candidates, kind, top_k)
        )


def _demo_promote(settings: Settings) -> None:
    """Puts each target's newest version in production through the gates (registry only:
    Triton is not running yet and loads the production versions when it starts)."""
    from scoring.registry import Registry
    from scoring.registry.cli import _versions_table, bootstrap
    from scoring.registry.promotion import default_actor

    registry = Registry(settings.registry.url)
    try:
        bootstrap(settings, registry, f"demo ({default_actor()})", newest=True)
        console.print(_versions_table(registry.versions()))
    finally:
        registry.close()


def _demo_activities(repo_path: Path, now: int, running: int = 10, ended: int = 2) -> list[str]:
    """Campaigns to rank in the demo: some still running at `now`, and a couple that have ended
    (the business filter drops and reports them)."""
    import pandas as pd

    stats = pd.read_parquet(
        repo_path / "data" / "activity_stats.parquet", columns=["activity_id", "end_ts"]
    ).drop_duplicates("activity_id", keep="last")
    live = stats["end_ts"] > now
    return (
        sorted(stats.loc[live, "activity_id"])[:running]
        + sorted(stats.loc[~live, "activity_id"])[:ended]
    )


@app.command()
def demo(
    users: Annotated[
        int, typer.Option(help="Data size: items, activities, impressions scale.")
    ] = 1000,
    epochs: int = 20,
) -> None:
    """Everything, end to end: data, features, training, Triton, gateway, real requests."""
    from scoring.client import RankingClient
    from scoring.gateway.process import GatewayProcess
    from scoring.triton.server import TritonServer

    settings = _settings()
    started = time.monotonic()
    console.rule("1/6 data")
    n_items, n_activities = max(users // 2, 50), max(users // 16, 20)
    data_generate(
        users=users,
        items=n_items,
        activities=n_activities,
        item_impressions=users * 40,
        activity_impressions=users * 40,
    )
    console.rule("2/6 features")
    features_apply()
    features_materialize()
    console.rule("3/6 training")
    _train(settings, list(TARGETS), epochs)
    console.rule("4/6 promotion (model registry)")
    _demo_promote(settings)
    console.rule("5/6 serving")
    run_dir = Path(".run")
    triton = TritonServer(settings.triton, list(TARGETS), log_path=run_dir / "triton.log")
    gateway = GatewayProcess(settings, log_path=run_dir / "gateway.log")
    try:
        with console.status("starting triton"):
            triton.start()
            triton.wait_ready()
            loaded = _sync_triton(settings)
        console.print(f"[green]triton ready[/] on {settings.triton.url}, serving {loaded}")
        with console.status("starting gateway"):
            gateway.start()
            gateway.wait_serving()
        console.print(f"[green]gateway SERVING[/] on {gateway.address}")
        console.rule("6/6 requests")
        now = int(datetime.now(UTC).timestamp())
        with RankingClient(gateway.address) as client:
            step = max(n_items // 20, 1)
            items = [f"i_{i:06d}" for i in range(0, step * 20, step)]
            activities = _demo_activities(settings.feast.repo_path, now)
            first = client.rank("u_000042", items, CandidateKind.ITEM, top_k=5, timestamp_s=now)
            _print_ranking("top 5 of 20 products for u_000042", first)
            accepted = client.feedback(first.request_id, first.candidates[0].id, "click")
            console.print(
                f"feedback: {accepted} click on {first.candidates[0].id} sent back "
                f"(arm {first.arm}); per-arm CTR: [bold]scoring experiments report[/]"
            )
            _print_ranking(
                f"top 5 of {len(activities)} activities for u_000042",
                client.rank(
                    "u_000042", activities, CandidateKind.ACTIVITY, top_k=5, timestamp_s=now
                ),
            )
            _print_ranking(
                "a brand-new user and a brand-new product",
                client.rank("new_user_1", [*items[:4], "i_new_sku"], CandidateKind.ITEM, top_k=5),
            )
    finally:
        with console.status("shutting down"):
            gateway.stop()
            triton.stop()
    console.print(f"[green]demo done[/] in {time.monotonic() - started:.1f}s; logs in {run_dir}/")


if __name__ == "__main__":
    app()
