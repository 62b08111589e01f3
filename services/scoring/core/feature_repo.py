"""Feature repository operations: apply definitions, materialize into the online store."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def feast_cli() -> str:
    """The `feast` command of this environment."""
    return str(Path(sys.executable).with_name("feast"))


def apply(repo_path: Path) -> str:
    """Runs `feast apply` in the repo (a subprocess: Feast imports the repo's modules by name).

    Returns:
        Feast's output.

    Raises:
        RuntimeError: with Feast's output when apply fails.
    """
    result = subprocess.run(
        [feast_cli(), "--chdir", str(repo_path), "apply"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"feast apply failed in {repo_path}:\n{result.stdout}{result.stderr}")
    return result.stdout


def open_store(repo_path: Path) -> Any:
    """A `feast.FeatureStore` for the repo."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_path))


def materialize(repo_path: Path, end: datetime | None = None) -> datetime:
    """Incremental materialization up to `end` (now by default): only new rows are loaded."""
    end = end or datetime.now(UTC)
    open_store(repo_path).materialize_incremental(end_date=end)
    return end
