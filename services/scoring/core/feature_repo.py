"""Feature repository operations: apply definitions, materialize, drop a project's state.

Every function takes the repo folder and an optional `fs_yaml` (the store profile, e.g.
features/feature_store.production.yaml for Redis + a PostgreSQL registry); None means the
repo's own feature_store.yaml (SQLite online store, file registry). A profile whose offline
store is Feast's Spark store (features/feature_store.spark.yaml) gets the environment it needs
from `profile_environment`: SparkSources at `feast apply`, and defaults for its ${VARS}.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scoring.core.settings import SparkSettings


def feast_cli() -> str:
    """The `feast` command of this environment."""
    return str(Path(sys.executable).with_name("feast"))


SOURCES_ENV = "SCORING_FEATURE_SOURCES"  # features/defaults.py SOURCES_ENV


def offline_store_type(repo_path: Path, fs_yaml: Path | None = None) -> str:
    """The profile's offline store type ("file", "spark", ...), from its YAML."""
    import yaml

    path = Path(fs_yaml) if fs_yaml is not None else Path(repo_path) / "feature_store.yaml"
    if not path.is_file():  # Feast reports the missing profile itself
        return "file"
    config = yaml.safe_load(path.read_text()) or {}
    store = config.get("offline_store", "file")
    return str(store.get("type", "file") if isinstance(store, dict) else store)


def profile_environment(repo_path: Path, fs_yaml: Path | None = None) -> dict[str, str]:
    """The environment variables the profile's repo is applied and opened with.

    SCORING_FEATURE_SOURCES follows the profile (features/defaults.py `table_source`: "spark"
    for a Spark offline store, else "file"). A Spark profile also gets its ${VARS}'s defaults
    from SparkSettings (a variable already set wins), loopback binding in local mode and this
    interpreter for Spark's Python workers.
    """
    if offline_store_type(repo_path, fs_yaml) != "spark":
        return {SOURCES_ENV: "file"}
    spark = spark_settings()
    env = {
        SOURCES_ENV: "spark",
        "SCORING_SPARK__MASTER": spark.master,
        "SCORING_SPARK__DRIVER_MEMORY": spark.driver_memory,
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON") or sys.executable,
    }
    if env["SCORING_SPARK__MASTER"].startswith("local"):
        env["SPARK_LOCAL_IP"] = os.environ.get("SPARK_LOCAL_IP") or "127.0.0.1"
    return env


def spark_settings() -> SparkSettings:
    """settings.spark as the environment sets it (SCORING_SPARK__*, else SparkSettings'
    defaults): what the Spark profile's ${VARS} default to and its session is built with, the
    same as the Spark build's."""
    from scoring.core.settings import Settings

    return Settings().spark


def on_spark(store: Any) -> bool:
    """Whether an open store's offline store is Feast's Spark store (the Spark profile)."""
    offline = getattr(getattr(store, "config", None), "offline_store", None)
    return type(offline).__name__ == "SparkOfflineStoreConfig"


def feast_command(repo_path: Path, fs_yaml: Path | None, *args: str) -> list[str]:
    """A `feast` command line for the repo and store profile (`feast -c REPO [-f YAML] ...`)."""
    cmd = [feast_cli(), "--chdir", str(Path(repo_path).resolve())]
    if fs_yaml is not None:
        cmd += ["--feature-store-yaml", str(Path(fs_yaml).resolve())]
    return [*cmd, *args]


def run_feast(repo_path: Path, fs_yaml: Path | None, *args: str) -> str:
    """Runs a feast CLI command (a subprocess: Feast imports the repo's modules by name).

    Returns:
        Feast's output.

    Raises:
        RuntimeError: with Feast's output when the command fails.
    """
    result = subprocess.run(
        feast_command(repo_path, fs_yaml, *args),
        capture_output=True,
        text=True,
        env=os.environ | profile_environment(repo_path, fs_yaml),
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"feast {' '.join(args)} failed in {repo_path}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def apply(repo_path: Path, fs_yaml: Path | None = None) -> str:
    """Runs `feast apply`: registers the definitions and creates the online tables.

    With a Spark profile the views' local tables are then made readable by Spark
    (`spark_readable`); Feast's check that Spark reads each source is skipped, since it would
    fail on them before that (the first read, by `materialize`, reports a missing table).
    """
    if offline_store_type(repo_path, fs_yaml) != "spark":
        return run_feast(repo_path, fs_yaml, "apply")
    out = run_feast(repo_path, fs_yaml, "apply", "--skip-source-validation")
    spark_readable(open_store(repo_path, fs_yaml))
    return out


def spark_readable(store: Any) -> list[Path]:
    """Rewrites the views' local Parquet tables whose timestamps are in nanoseconds (pandas'
    unit, what the build writes) with microseconds, and returns the files rewritten.

    Spark reads no Parquet TIMESTAMP(NANOS) column ([PARQUET_TYPE_ILLEGAL]; its only switch,
    spark.sql.legacy.parquet.nanosAsLong, reads them as numbers). The cast is exact or fails:
    event times are whole seconds. Only the files of Spark profiles' views (SparkSources with
    a local path) are touched, atomically (temp file, then rename); remote tables (s3a://,
    hdfs://) must be written with microseconds by their job.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rewritten = []
    for view in store.list_feature_views():
        source = view.batch_source
        path = getattr(source, "path", None)
        if type(source).__name__ != "SparkSource" or not path or "://" in str(path):
            continue
        file = Path(path)
        if not file.is_file():
            continue
        schema = pq.read_schema(file)
        nanos = [
            i for i, f in enumerate(schema) if pa.types.is_timestamp(f.type) and f.type.unit == "ns"
        ]
        if not nanos:
            continue
        table = pq.read_table(file)
        for i in nanos:
            field = table.schema.field(i)
            micros = pa.timestamp("us", tz=field.type.tz)
            table = table.set_column(i, field.with_type(micros), table.column(i).cast(micros))
        tmp = file.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(file)
        rewritten.append(file)
    return rewritten


def open_store(repo_path: Path, fs_yaml: Path | None = None) -> Any:
    """A `feast.FeatureStore` for the repo and store profile (a Spark profile's ${VARS} get
    their defaults in this process's environment first; variables already set are kept)."""
    from feast import FeatureStore

    for key, value in profile_environment(repo_path, fs_yaml).items():
        if key != SOURCES_ENV:
            os.environ.setdefault(key, value)
    if fs_yaml is None:
        return FeatureStore(repo_path=str(repo_path))
    return FeatureStore(repo_path=str(repo_path), fs_yaml_file=Path(fs_yaml).resolve())


def materialize(
    repo_path: Path,
    end: datetime | None = None,
    fs_yaml: Path | None = None,
    full: bool = False,
    views: Collection[str] | None = None,
) -> datetime:
    """Loads the online store up to `end` (now by default); `views`: these views only.

    Incremental by default, as `feast materialize-incremental END`: only rows newer than the
    previous run are loaded. `full` reloads every view over its TTL (`feast materialize START
    END`), for rows written with older timestamps, e.g. a new feature's column.

    A view never loaded whose table ends before `end - ttl` (an imported log of last year) is
    loaded over the TTL before its newest row instead: Feast's window would hold no row of it
    and the online store would stay empty. Its rows are then as old as the log: the gateway
    counts a value older than the view's TTL at the request's time as missing, so rank such a
    log as of its own time (`scoring rank --at`, the request context's timestamp).
    """
    end = end or datetime.now(UTC)
    store = open_store(repo_path, fs_yaml)
    if on_spark(store):
        spark_readable(store)
        _spark_session()
    recent = []
    for view in store.list_feature_views():
        if views is not None and view.name not in views:
            continue
        ttl = view.ttl if view.ttl else timedelta(days=3650)
        newest = newest_row(repo_path, view) if full or _never_loaded(view) else None
        if not (full or (newest is not None and newest < end - ttl)):
            recent.append(view.name)
            continue
        start = (end if newest is None else min(end, newest)) - ttl
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
    if recent:
        store.materialize_incremental(end_date=end, feature_views=recent)
    return end


def _spark_session() -> None:
    """Starts the Spark profile's session (unless one is active) for Feast to reuse.

    Feast 0.67's Spark engine builds a missing session from its whole `batch_engine` mapping
    (`type`, `spark_conf`, ... as if they were Spark properties), so the profile's
    `spark_conf` would never apply; scoring builds it from the same variables instead.
    """
    from scoring.core.spark import spark_session

    spark_session(spark_settings().model_copy(update={"app_name": "scoring-feast"}))


def _never_loaded(view: Any) -> bool:
    return not getattr(view, "materialization_intervals", None)


def newest_row(repo_path: Path, view: Any) -> datetime | None:
    """The newest event timestamp of a view's Parquet table (None: not a local Parquet file, or
    empty), read from the file's column statistics when it has them."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    source = view.batch_source
    path, field = getattr(source, "path", None), getattr(source, "timestamp_field", "")
    if not path or not field or "://" in str(path):
        return None
    file = Path(path) if Path(path).is_absolute() else Path(repo_path) / path
    if not file.is_file():
        return None
    column = pq.read_table(file, columns=[field]).column(field)
    newest: datetime | None = pc.max(column).as_py() if len(column) else None
    if newest is None or newest.tzinfo:
        return newest
    return newest.replace(tzinfo=UTC)


def drop_project(store: Any) -> None:
    """Removes one project's online rows and registry entries, and nothing else.

    `feast teardown` would also empty a shared SQL registry of every project; this deletes the
    project's Redis/SQLite rows (the provider's teardown, scoped to the project) and its
    registry rows only.
    """
    from scoring.core.feast_compat import provider  # imports Feast: only when used

    project = store.project
    views = store.list_feature_views()
    entities = store.list_entities()
    provider(store).teardown_infra(project, views, entities)
    try:
        store.registry.delete_project(project, commit=True)
    except Exception:  # a file registry has nothing to share; its folder goes with the repo
        pass
