"""Data and features: synthetic or imported events, the feature tables, apply, materialize."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from scoring.core.settings import Settings

if TYPE_CHECKING:
    from scoring.datagen.dataset import DataSet
    from scoring.datagen.events import EventLog
    from scoring.datagen.synthetic import SyntheticConfig


def generate_events(config: SyntheticConfig) -> EventLog:
    """A synthetic e-commerce event stream."""
    from scoring.datagen.synthetic import generate

    return generate(config)


def build_features(
    settings: Settings, log: EventLog, on_step: Callable[[str], None] | None = None
) -> DataSet:
    """Builds the offline feature tables and labels of `log` into the feature repo's data/.

    Args:
        on_step: called with each build step's name (`scoring.datagen.build.BUILD_STEPS`).

    The engine is settings.build_engine ("spark": a PySpark job on settings.spark.master).
    """
    from scoring.datagen.dataset import build_data_set

    return build_data_set(
        log,
        settings.feast.repo_path / "data",
        progress=on_step,
        engine=settings.build_engine,
        spark=settings.spark,
    )


def import_data(
    settings: Settings,
    events: Path,
    items: Path | None = None,
    users: Path | None = None,
    activities: Path | None = None,
    on_step: Callable[[str], None] | None = None,
    bundles: Path | None = None,
) -> DataSet:
    """Validates your own event log (and attribute tables) and builds the feature tables.

    Raises:
        ImportValidationError: the message names the file, column and rows at fault.
    """
    from scoring.datagen.importer import read_event_log

    log = read_event_log(events, items, users, activities, bundles)
    return build_features(settings, log, on_step)


def apply_features(settings: Settings) -> None:
    """Registers the feature definitions (`feast apply`)."""
    from scoring.core import feature_repo

    feature_repo.apply(settings.feast.repo_path, settings.feast.fs_yaml)


@contextlib.contextmanager
def _library_output() -> Iterator[io.StringIO]:
    """Keeps what a library prints (Feast's coloured lines, its progress bars) off the
    terminal; on failure the exception carries it as a note."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            yield captured
    except Exception as exc:
        if captured.getvalue().strip():
            exc.add_note(f"output before the failure:\n{captured.getvalue()}")
        raise


def materialize_features(settings: Settings, *, full: bool = False) -> datetime:
    """Loads new feature rows into the online store, up to now; returns that time.

    Args:
        full: reload every view over its TTL (after adding a feature), not only new rows.
    """
    from scoring.core import feature_repo

    with _library_output():
        return feature_repo.materialize(
            settings.feast.repo_path, fs_yaml=settings.feast.fs_yaml, full=full
        )
