"""`scoring train`, `scoring report` and `scoring model-latency`: the trainer's commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from scoring import workflows
from scoring.cli.common import console, load_settings, refusals
from scoring.core.settings import Settings

if TYPE_CHECKING:
    from scoring.trainer.implicit import Holdout
    from scoring.trainer.served import ServedLog
    from scoring.trainer.train import TrainConfig


def train(
    target: Annotated[
        list[str] | None, typer.Option(help="Model target(s); all by default.")
    ] = None,
    epochs: int = 20,
    device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1 ...")] = "cpu",
    seed: int = 7,
    report: Annotated[bool, typer.Option(help="Print each version's full report.")] = True,
    holdout: Annotated[
        str,
        typer.Option(help="none, or loo/time/basket: leave out what `scoring evaluate` holds out."),
    ] = "none",
    served: Annotated[
        str,
        typer.Option(
            help="Served impressions (feature log + Feedback): no, with (beside the offline "
            "log) or only."
        ),
    ] = "no",
    stream: Annotated[
        bool,
        typer.Option(
            help="Fit from Parquet shards of the training matrix in shuffled batches with "
            "bounded memory (default: the in-memory matrix)."
        ),
    ] = False,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Data-parallel training processes (torch.distributed: gloo on the CPU, NCCL "
            "on GPUs); more than 1 implies --stream.",
        ),
    ] = 1,
) -> None:
    """Train model target(s) from Feast and write a new version into the model repository."""
    from scoring.trainer.implicit import HOLDOUTS
    from scoring.trainer.served import ServedLog
    from scoring.trainer.train import TrainConfig

    settings = load_settings()
    if holdout not in HOLDOUTS:
        raise typer.BadParameter(f"{holdout!r} is not one of {HOLDOUTS}", param_hint="--holdout")
    if served not in ("no", "with", "only"):
        raise typer.BadParameter(f"{served!r}: no, with or only", param_hint="--served")
    log = None
    if served != "no":
        gw = settings.gateway
        log = ServedLog(gw.feature_log_dir, gw.events_dir, only=served == "only")
    with refusals():
        names = workflows.check_targets(target)
        workflows.check_device(device)
        cfg = TrainConfig(
            epochs=epochs,
            device=device,
            seed=seed,
            stream=stream or processes > 1,
            processes=processes,
        )
        # Every target by default: one with nothing to train on is skipped, said why.
        train_and_show(
            settings, names, cfg, report, holdout=holdout, served=log, skip_untrainable=not target
        )


def train_and_show(
    settings: Settings,
    names: list[str],
    cfg: TrainConfig,
    report: bool,
    holdout: Holdout = "none",
    served: ServedLog | None = None,
    skip_untrainable: bool = False,
) -> None:
    """Trains and registers `names` with a progress bar each, then prints their metrics."""
    from scoring.trainer.implicit import TrainingDataError

    skipped: list[tuple[str, str]] = []
    try:
        with _training_progress(cfg.epochs) as on_progress:
            models = workflows.train_and_register(
                settings,
                names,
                cfg,
                on_progress=on_progress,
                holdout=holdout,
                served=served,
                on_skip=(lambda n, why: skipped.append((n, why))) if skip_untrainable else None,
            )
    except TrainingDataError as exc:
        console.print(f"train refused: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(code=2) from None
    for name, why in skipped:
        console.print(f"{name} skipped: {why}", style="yellow", markup=False, highlight=False)
    _print_trained(models, report)


@contextmanager
def _training_progress(epochs: int) -> Iterator[workflows.TrainProgress]:
    """A progress bar per target while it trains; yields the workflow's progress callback."""
    # Steps: training set, each epoch, evaluation, export.
    offsets = {"training set": 0, "fit": 1, "evaluate": epochs + 1, "export": epochs + 2}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(target: str, stage: str, done: int, total: int, note: str) -> None:
            if target not in tasks:
                tasks[target] = progress.add_task(target, total=epochs + 3, note="")
            progress.update(
                tasks[target],
                description=f"{target}: {stage}",
                completed=offsets.get(stage, 0) + done,
                note=note,
            )

        yield on_progress


def _print_trained(models: list[workflows.RegisteredModel], report: bool) -> None:
    """The trained versions' headline metrics, and what to do next."""
    from scoring.trainer.report import report_tables

    table = Table(title="trained models (test split: the latest 20% of time)")
    columns = ("target", "version", "rows", "test AUC", "oracle AUC", "AUC/oracle", "NDCG@10")
    for col in (*columns, "popularity", "top category", "time"):
        table.add_column(col, justify="right" if col != "target" else "left")
    nan = float("nan")
    for m in models:
        training = m.manifest["training"]
        baselines = m.manifest.get("evaluation", {}).get("table", {})
        oracle = m.metrics.get("oracle_auc", nan)
        table.add_row(
            m.target,
            f"{m.version}" + ("" if m.created else " (unchanged)"),
            f"{training['train_rows'] + training['test_rows']:,}",
            f"{m.metrics['auc']:.4f}",
            f"{oracle:.4f}",
            f"{m.metrics['auc'] / oracle:.3f}",
            f"{m.metrics.get('ndcg@10', nan):.4f}",
            f"{baselines.get('popularity', {}).get('ndcg@10', nan):.4f}",
            f"{baselines.get('user_top_category', {}).get('ndcg@10', nan):.4f}",
            f"{m.seconds:.1f}s",
        )
    console.print(table)
    console.print(
        "versions are registered (stage: registered); promote one with "
        "[bold]scoring models promote <target> <version>[/]"
    )
    if report:
        for m in models:
            for t in report_tables(m.manifest):
                console.print(t)
    else:
        console.print("full evaluation and baselines: [bold]scoring report <target>[/]")


def report(
    target: str,
    version: Annotated[int | None, typer.Option(help="Version; the latest by default.")] = None,
) -> None:
    """Print a trained version's report: data, metrics vs baselines and oracle, feature groups."""
    from scoring.trainer.export import read_manifest
    from scoring.trainer.report import report_tables

    with refusals():
        trained = workflows.trained_version(load_settings(), target, version)
    manifest = read_manifest(trained.model_dir, trained.version)
    if "evaluation" not in manifest:
        raise typer.BadParameter(f"{target} v{manifest['version']}: manifest has no evaluation")
    for table in report_tables(manifest):
        console.print(table)


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

    devices = device or devices_here()
    with refusals():
        trained = workflows.trained_version(load_settings(), target, version)
        for name in devices:
            workflows.check_device(name)
    model_dir, chosen = trained.model_dir, trained.version
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
