"""`scoring data ...`: the data sets behind the feature store and training."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from scoring import workflows
from scoring.cli.common import console, load_settings
from scoring.core.settings import Settings

if TYPE_CHECKING:
    from scoring.datagen.dataset import DataSet
    from scoring.datagen.synthetic import SyntheticConfig

app = typer.Typer(help="Data sets for the feature store and training.", no_args_is_help=True)


class Engine(StrEnum):
    """Where the feature tables are computed (settings.build_engine)."""

    pandas = "pandas"
    spark = "spark"


EngineOption = Annotated[
    Engine | None,
    typer.Option(
        help="Compute the feature tables in this process (pandas) or on Spark (docs/spark.md); "
        "default: SCORING_BUILD_ENGINE or pandas."
    ),
]
SparkMasterOption = Annotated[
    str | None,
    typer.Option(
        help="The Spark master of --engine spark: local[N], spark://host:7077, yarn, "
        "k8s://...; default: SCORING_SPARK__MASTER or local[2]."
    ),
]


def _with_engine(settings: Settings, engine: Engine | None, spark_master: str | None) -> Settings:
    """`settings` with the build engine and Spark master of the command line, when given."""
    update: dict[str, object] = {}
    if engine is not None:
        update["build_engine"] = engine.value
    if spark_master is not None:
        update["spark"] = settings.spark.model_copy(update={"master": spark_master})
    return settings.model_copy(update=update) if update else settings


@app.command("generate")
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
    register: Annotated[
        bool,
        typer.Option(
            help="Register the feature definitions (feast apply) once the tables are built."
        ),
    ] = True,
    engine: EngineOption = None,
    spark_master: SparkMasterOption = None,
) -> None:
    """Generate a synthetic e-commerce event stream and build the feature tables from it."""
    from scoring.datagen.synthetic import SyntheticConfig

    cfg = (
        SyntheticConfig.large(seed)
        if large
        else SyntheticConfig(
            users, items, activities, item_impressions, activity_impressions, days, seed=seed
        )
    )
    generate(_with_engine(load_settings(), engine, spark_master), cfg, register=register)


def generate(settings: Settings, cfg: SyntheticConfig, *, register: bool = True) -> None:
    """Simulates `cfg`'s event stream and builds its feature tables, showing progress; then
    registers the feature definitions unless `register` is False (the caller does it)."""
    with console.status("simulating the event stream"):
        log = workflows.generate_events(cfg)
    console.print(f"{len(log.events):,} events, {log.events['user_id'].nunique():,} users")
    progress, step = _build_progress("features")
    with progress:
        data = workflows.build_features(settings, log, step)
    _print_data_set("synthetic data", data)
    if register:
        _register(settings)


@app.command("import")
def data_import(
    events: Annotated[Path, typer.Argument(help="Event log, .csv or .parquet.")],
    items: Annotated[Path | None, typer.Option(help="Item attributes table.")] = None,
    users: Annotated[Path | None, typer.Option(help="User attributes table.")] = None,
    activities: Annotated[Path | None, typer.Option(help="Campaigns table.")] = None,
    bundles: Annotated[
        Path | None, typer.Option(help='Bundles table (bundle_id, items as "i1|i2", ...).')
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            help="Register the feature definitions (feast apply) once the tables are built."
        ),
    ] = True,
    engine: EngineOption = None,
    spark_master: SparkMasterOption = None,
) -> None:
    """Validate your own event log and build the feature tables from it (README: Data in)."""
    from scoring.datagen.importer import ImportValidationError

    settings = _with_engine(load_settings(), engine, spark_master)
    progress, step = _build_progress("features")
    try:
        with progress:
            data = workflows.import_data(
                settings, events, items, users, activities, bundles=bundles, on_step=step
            )
    except ImportValidationError as exc:
        console.print(Text.assemble(("import refused", "red"), f": {exc}"), highlight=False)
        raise typer.Exit(code=2) from None
    _print_data_set(f"imported {events.name}", data)
    if register:
        _register(settings)
    console.print("next: `scoring train`, then `scoring evaluate` (README: Data in)")


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


def _register(settings: Settings) -> None:
    """Registers the feature definitions (`feast apply`): the tables are ready to train on."""
    with console.status("registering the feature definitions (feast apply)"):
        workflows.apply_features(settings)
    console.print(f"registered the feature definitions of {settings.feast.repo_path}")


def _print_data_set(title: str, data: DataSet) -> None:
    table = Table(title=f"{title} (newest event {data.end:%Y-%m-%d %H:%M} UTC)")
    for col in ("table", "rows", "file"):
        table.add_column(col)
    import pyarrow.parquet as pq

    # The row counts from the files: with the Spark engine, not every table is in memory.
    for path in data.paths:
        table.add_row(path.stem, f"{pq.ParquetFile(path).metadata.num_rows:,}", str(path))
    console.print(table)


@app.command("public")
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
