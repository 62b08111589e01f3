"""A private feature repo with a small synthetic data set, for the benches that read a store.

Shared by redis_cluster_bench.py and sizing_bench.py (and the copy by measure.py): the
checkout's feature definitions copied without data, a 14-day synthetic log of the given size
built into it (the text encodings cached in .bench/), the registry a SQLite file beside it.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def copy_feature_repo(repo: Path) -> Path:
    """The checkout's feature repo (definitions only, no data) copied to `repo`."""
    shutil.copytree(ROOT / "features", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return repo


def synthetic_repo(work: Path, users: int, items: int) -> Path:
    """work/features with a synthetic data set of `users` and `items` built into it, ending
    five minutes ago; FEAST_REGISTRY_PATH set to a SQLite registry in `work`. Not applied:
    the caller picks the store profile."""
    from scoring.datagen.dataset import build_data_set
    from scoring.datagen.synthetic import SyntheticConfig, generate

    repo = copy_feature_repo(work / "features")
    os.environ["FEAST_REGISTRY_PATH"] = f"sqlite:///{work / 'registry.db'}"
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    cfg = SyntheticConfig(
        users, items, 60, 8 * users, 2 * users, days=14, organic_per_user=8, end=end
    )
    cache = ROOT / ".bench" / "text_cache.parquet"
    cache.parent.mkdir(exist_ok=True)
    build_data_set(generate(cfg), repo / "data", text_cache=cache)
    return repo
