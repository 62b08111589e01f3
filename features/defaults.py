"""Typed defaults live next to each feature: `feature("price", Float32, default=0.0)`.

The default is stored in the Field's tags (or, for on-demand views, whose output fields must
match Feast's inferred schema exactly, in the view's tags as `default:<feature>`), so it travels
through the Feast registry into the feature contract that the trainer and the gateway share.
A fixed-length float vector is declared with `vector(name, length, default)`: the contract
expands it into `length` model columns (`<ref>[0]` ...) with one missing indicator.
A view over one offline table is declared with `table_view(name, entity, owner, ttl, schema)`;
its source is a FileSource, or a SparkSource when the repo is applied with
SCORING_FEATURE_SOURCES=spark (the Spark profile, features/feature_store.spark.yaml).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource
from feast.data_source import DataSource
from feast.types import Array, FeastType, Float32

DEFAULT_TAG = "default"
LENGTH_TAG = "length"
INPUTS_TAG = "inputs"  # scoring.gateway.read_plan.INPUTS_TAG
# The kind of the views' sources: "file" (FileSource, the default) or "spark" (SparkSource, for
# Feast's Spark offline store); scoring.core.feature_repo sets it from the profile at apply.
SOURCES_ENV = "SCORING_FEATURE_SOURCES"
# Where a SparkSource's tables live (a folder or URI holding <view>.parquet); default: data/.
DATA_ENV = "SCORING_FEATURE_DATA"


def feature(name: str, dtype: FeastType, default: float, description: str = "") -> Field:
    """A Feast Field whose missing value is `default` in training and in serving."""
    return Field(
        name=name, dtype=dtype, description=description, tags={DEFAULT_TAG: repr(float(default))}
    )


def vector(name: str, length: int, default: float, description: str = "") -> Field:
    """An Array(Float32) Field of exactly `length` values; each is `default` when missing."""
    return Field(
        name=name,
        dtype=Array(Float32),
        description=description,
        tags={DEFAULT_TAG: repr(float(default)), LENGTH_TAG: str(length)},
    )


def view_defaults(**defaults: float) -> dict[str, str]:
    """View-level tags declaring the defaults of an on-demand view's output features."""
    return {f"{DEFAULT_TAG}:{name}": repr(float(value)) for name, value in defaults.items()}


def array_inputs() -> dict[str, str]:
    """The view tag of an on-demand UDF that, besides Feast's DataFrame, also takes a dict of
    float64 numpy columns (its inputs by short name, and the request fields) and then returns a
    dict of its output columns. The gateway then calls it that way: no pandas on the request
    path. Both forms must give the same values (tests/features/test_request_features.py)."""
    return {INPUTS_TAG: "arrays"}


def table_source(name: str) -> DataSource:
    """The offline table of view `name`: data/<name>.parquet, rows timed by event_timestamp.

    A FileSource (path relative to the repo) unless SCORING_FEATURE_SOURCES=spark: then a
    SparkSource over the same table, at SCORING_FEATURE_DATA/<name>.parquet or this repo's
    data/ folder as an absolute path (Spark reads paths as given, not against the repo).
    """
    kind = os.environ.get(SOURCES_ENV, "file") or "file"
    if kind == "file":
        return FileSource(
            name=f"{name}_source", path=f"data/{name}.parquet", timestamp_field="event_timestamp"
        )
    if kind != "spark":
        raise ValueError(f"{SOURCES_ENV}: unknown source kind {kind!r} (file or spark)")
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
        SparkSource,
    )

    base = os.environ.get(DATA_ENV) or str(Path(__file__).resolve().parent / "data")
    return SparkSource(
        name=f"{name}_source",
        path=f"{base.rstrip('/')}/{name}.parquet",
        file_format="parquet",
        timestamp_field="event_timestamp",
    )


def table_view(
    name: str, entity: Entity, owner: str, ttl: timedelta, schema: list[Field]
) -> FeatureView:
    """An online FeatureView of one entity over its own table (`table_source(name)`)."""
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=ttl,
        schema=schema,
        source=table_source(name),
        online=True,
        tags={"owner": owner},
    )


def float_outputs(**defaults: float) -> tuple[list[Field], dict[str, str]]:
    """An on-demand view's Float32 outputs, in this order, and the view tags declaring their
    defaults: each output is named once, so its Field and its default cannot drift apart."""
    return [Field(name=name, dtype=Float32) for name in defaults], view_defaults(**defaults)
