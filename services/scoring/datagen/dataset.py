"""From an event log to the feature repo's data folder: build every table and write it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from scoring.datagen.build import BuildOptions, Progress, build_tables, write_tables
from scoring.datagen.events import EVENT_COLUMNS, OPTIONAL_EVENT_COLUMNS, EventLog

# features/data/item_oracle.parquet, written when the items table has the oracle (synthetic).
ITEM_ORACLE_COLUMNS = ("item_id", "category", "brand", "oracle_appeal")


@dataclass(frozen=True, slots=True)
class DataSet:
    """The written tables (by file stem), their files and the newest event time."""

    tables: dict[str, pd.DataFrame]
    paths: list[Path]
    end: pd.Timestamp


def build_data_set(
    log: EventLog,
    data_dir: Path,
    text_cache: Path | None = None,
    progress: Progress | None = None,
) -> DataSet:
    """Builds the offline feature tables and labels of `log` into `data_dir` (Parquet).

    Args:
        log: a validated event log (synthetic or imported).
        data_dir: the feature repo's data folder (features/data).
        text_cache: where text encodings are cached; `data_dir/text_cache.parquet` by default.
        progress: called with the name of each build step as it starts.
    """
    options = BuildOptions(data_dir, text_cache or data_dir / "text_cache.parquet")
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
    return DataSet(tables, write_tables(tables, data_dir), log.end)
