"""The feature build on Spark (local mode) writes the pandas build's tables: every one, the same
columns, dtypes and rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scoring.cli.data import Engine, _with_engine
from scoring.core.settings import Settings
from scoring.datagen.build import TABLES
from scoring.datagen.dataset import DataSet, build_data_set
from scoring.datagen.spark_build import STAGING
from scoring.datagen.synthetic import SyntheticConfig, generate

from ..conftest import TEXT_CACHE

END = datetime(2026, 3, 1, tzinfo=UTC)
# Smaller than SMALL: every per-entity table still has rows (bundles and campaigns too).
CONFIG = SyntheticConfig(120, 80, 12, 4000, 1500, days=14, end=END)
EXPECTED = {*TABLES, "events", "item_oracle"}


@pytest.fixture(scope="module")
def engines(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The same log built by both engines into two folders (each with fresh category codes)."""
    log = generate(CONFIG)
    pandas_dir, spark_dir = tmp_path_factory.mktemp("pandas"), tmp_path_factory.mktemp("spark")
    build_data_set(log, pandas_dir, text_cache=TEXT_CACHE)
    # Two shuffle partitions: the same plan, fewer tasks on a small machine.
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    try:
        data = build_data_set(log, spark_dir, text_cache=TEXT_CACHE, engine="spark", spark=spark)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)
    _check_data_set(data, spark_dir)
    yield pandas_dir, spark_dir


def _check_data_set(data: DataSet, folder: Path) -> None:
    assert {p.name for p in data.paths} == {f"{name}.parquet" for name in EXPECTED}
    assert all(p.parent == folder and p.is_file() for p in data.paths)
    assert not (folder / STAGING).exists()


def assert_tables_equal(left: pd.DataFrame, right: pd.DataFrame, name: str) -> None:
    """Same columns (in order), dtypes and rows once both are sorted by every scalar column;
    floats equal within rtol 1e-5 (float32 sums may round differently)."""
    assert list(left.columns) == list(right.columns), name
    assert left.dtypes.to_dict() == right.dtypes.to_dict(), name
    assert len(left) == len(right), name
    keys = [c for c in left.columns if not _holds_arrays(left[c])]
    left = left.sort_values(keys, kind="stable", ignore_index=True)
    right = right.sort_values(keys, kind="stable", ignore_index=True)
    for col in left.columns:
        a, b = left[col], right[col]
        if _holds_arrays(a):
            for x, y in zip(a, b, strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-5, err_msg=f"{name}.{col}")
        elif pd.api.types.is_float_dtype(a):
            np.testing.assert_allclose(a, b, rtol=1e-5, equal_nan=True, err_msg=f"{name}.{col}")
        else:
            assert a.equals(b), f"{name}.{col}"


def _holds_arrays(col: pd.Series) -> bool:
    return col.dtype == object and len(col) > 0 and isinstance(col.iloc[0], np.ndarray)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_table_matches_the_pandas_build(engines: tuple[Path, Path], name: str) -> None:
    pandas_dir, spark_dir = engines
    left = pd.read_parquet(pandas_dir / f"{name}.parquet")
    right = pd.read_parquet(spark_dir / f"{name}.parquet")
    if name not in ("impressions_bundle", "item_oracle", "category_complements"):
        assert len(left) > 0, name  # the comparison compares something
    assert_tables_equal(left, right, name)
    # The files' Arrow types too (what Feast's offline store reads), not only pandas' view.
    left_schema = pq.read_schema(pandas_dir / f"{name}.parquet")
    assert left_schema.equals(pq.read_schema(spark_dir / f"{name}.parquet"), check_metadata=False)


def test_the_labels_keep_the_pandas_order(engines: tuple[Path, Path]) -> None:
    # Trainers split by row order: time, then the log's order of ties.
    for name in ("impressions_item", "impressions_activity"):
        left = pd.read_parquet(engines[0] / f"{name}.parquet")
        right = pd.read_parquet(engines[1] / f"{name}.parquet")
        pd.testing.assert_frame_equal(left, right, check_exact=False, rtol=1e-5)


def test_the_comparison_catches_a_difference(engines: tuple[Path, Path]) -> None:
    frame = pd.read_parquet(engines[1] / "user_affinity.parquet")
    assert_tables_equal(frame, frame.sample(frac=1.0, random_state=0), "shuffled")
    changed = frame.copy()
    changed.loc[changed.index[3], "affinity_02"] *= np.float32(1.001)
    wider = frame.astype({"views_90d_01": np.float64})
    variants = {
        "a value": changed,
        "a dtype": wider,
        "a row": frame.iloc[1:],
        "a column": frame.drop(columns="top_category"),
        "a shifted time": frame.assign(event_timestamp=frame["event_timestamp"] + pd.Timedelta(1)),
    }
    for what, variant in variants.items():
        with pytest.raises(AssertionError):
            assert_tables_equal(frame, variant, what)


def test_the_command_line_picks_the_engine_and_master() -> None:
    settings = Settings()
    master = settings.spark.master
    assert _with_engine(settings, None, None) is settings
    chosen = _with_engine(settings, Engine.spark, "spark://spark-master:7077")
    assert chosen.build_engine == "spark"
    assert chosen.spark.master == "spark://spark-master:7077"
    assert chosen.spark.driver_memory == settings.spark.driver_memory
    assert settings.spark.master == master  # the original is unchanged
