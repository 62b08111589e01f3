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
    """
    end = end or datetime.now(UTC)
    store = open_store(repo_path, fs_yaml)
    if not full:
        store.materialize_incremental(end_date=end)
        return end
    for view in store.list_feature_views():
        ttl = view.ttl if view.ttl else timedelta(days=3650)
        store.materialize(start_date=end - ttl, end_date=end, feature_views=[view.name])
    return end


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
