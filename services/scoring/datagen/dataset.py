"""From an event log to the feature repo's data folder: build every table and write it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from scoring.core.settings import SparkSettings
from scoring.datagen.build import BuildOptions, Progress, build_tables, write_tables
from scoring.datagen.events import EVENT_COLUMNS, OPTIONAL_EVENT_COLUMNS, EventLog

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# features/data/item_oracle.parquet, written when the items table has the oracle (synthetic).
ITEM_ORACLE_COLUMNS = ("item_id", "category", "brand", "oracle_appeal")


@dataclass(frozen=True, slots=True)
class DataSet:
    """The built tables (by file stem), the files of every table and the newest event time.

    With the Spark engine, `tables` holds the tables built on the driver only: the
    per-entity ones (scoring.datagen.spark_build) are in `paths`, never whole in memory.
    """

    tables: dict[str, pd.DataFrame]
    paths: list[Path]
    end: pd.Timestamp


def build_data_set(
    log: EventLog,
    data_dir: Path,
    text_cache: Path | None = None,
    progress: Progress | None = None,
    engine: Literal["pandas", "spark"] = "pandas",
    spark: SparkSession | SparkSettings | None = None,
) -> DataSet:
    """Builds the offline feature tables and labels of `log` into `data_dir` (Parquet).

    Args:
        log: a validated event log (synthetic or imported).
        data_dir: the feature repo's data folder (features/data).
        text_cache: where text encodings are cached; `data_dir/text_cache.parquet` by default.
        progress: called with the name of each build step as it starts.
        engine: "pandas" (in this process) or "spark" (the per-entity tables on Spark:
            scoring.datagen.spark_build); the tables are the same.
        spark: the Spark engine's session, or the settings to get one with
            (`scoring.core.spark.spark_session`); default SparkSettings().
    """
    options = BuildOptions(data_dir, text_cache or data_dir / "text_cache.parquet")
    written: dict[str, Path] = {}
    if engine == "spark":
        from scoring.core.spark import spark_session
        from scoring.datagen.spark_build import build_tables_spark

        session = spark if spark is not None and not isinstance(spark, SparkSettings) else None
        if session is None:
            session = spark_session(spark if isinstance(spark, SparkSettings) else None)
        built = build_tables_spark(log, options, progress, session)
        tables, written = built.frames, built.written
    else:
        tables = build_tables(log, options, progress)
    # The normalised log itself (with order_id and bundle_id when it has them), for offline
    # evaluation and implicit-feedback training.
    keep = [*EVENT_COLUMNS, *OPTIONAL_EVENT_COLUMNS]
    tables["events"] = log.events[[c for c in keep if c in log.events.columns]]
    # The synthetic items' planted traits, for the basket oracle (evaluation).
    if ITEM_ORACLE_COLUMNS[-1] in log.items.columns:
        tables["item_oracle"] = log.items[list(ITEM_ORACLE_COLUMNS)].reset_index(drop=True)
    if progress is not None:
        progress("writing Parquet")
    return DataSet(tables, [*written.values(), *write_tables(tables, data_dir)], log.end)
