"""Feature repository operations: apply definitions, materialize, drop a project's state.

Every function takes the repo folder and an optional `fs_yaml` (the store profile, e.g.
features/feature_store.production.yaml for Redis + a PostgreSQL registry); None means the
repo's own feature_store.yaml (SQLite online store, file registry).
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def feast_cli() -> str:
    """The `feast` command of this environment."""
    return str(Path(sys.executable).with_name("feast"))


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
        feast_command(repo_path, fs_yaml, *args), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"feast {' '.join(args)} failed in {repo_path}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def apply(repo_path: Path, fs_yaml: Path | None = None) -> str:
    """Runs `feast apply`: registers the definitions and creates the online tables."""
    return run_feast(repo_path, fs_yaml, "apply")


def open_store(repo_path: Path, fs_yaml: Path | None = None) -> Any:
    """A `feast.FeatureStore` for the repo and store profile."""
    from feast import FeatureStore

    if fs_yaml is None:
        return FeatureStore(repo_path=str(repo_path))
    return FeatureStore(repo_path=str(repo_path), fs_yaml_file=Path(fs_yaml).resolve())


def materialize(
    repo_path: Path, end: datetime | None = None, fs_yaml: Path | None = None, full: bool = False
) -> datetime:
    """Loads the online store up to `end` (now by default).

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
    recent = []
    for view in store.list_feature_views():
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
