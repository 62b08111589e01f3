"""The feature build on Spark (`scoring data generate|import --engine spark`).

What runs where:
- Spark, partitioned by entity: item_stats, user_behavior, user_affinity, activity_stats and
  the labelled impressions (impressions_item, impressions_activity, impressions_bundle). The
  events are staged as Parquet, read by Spark and grouped into buckets of entities
  (`groupBy(bucket).applyInPandas`); each bucket runs the SAME numpy code as the pandas build
  (scoring.datagen.entity_tables: `item_stats`, `user_tables`, `activity_stats`, `labels`) on its
  entities' events only. Spark writes these tables as Parquet part files; the driver then
  streams the parts, one record batch at a time, into data/<name>.parquet with the pandas
  build's schema: these tables and their windows are never whole on the driver.
- The driver (this process), with the pandas build's code: the global context the buckets
  are handed (entity indices, snapshot times, the item catalogue and category codes, the
  campaigns), user_profile, item_embedding (text model + PCA), the cross-entity tables
  (collaborative: recent items, co-occurrence, ALS embeddings; baskets: co-purchase,
  complementary categories) and bundle_stats. These read many entities' events at once;
  they get the event log's columns the pandas build gives them.

The tables equal the pandas build's (tests/datagen/test_spark_build.py compares every one);
only the row order of the per-entity tables differs (the labels keep it: time, then log
order). docs/spark.md: running it on a cluster, memory knobs.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.datagen.build import (
    BuildOptions,
    Vocab,
    activity_catalogue,
    bundles_table,
    cross_entity_tables,
    index_log,
    item_embedding,
    log_catalogue,
    snapshot_times,
    user_profile,
)
from scoring.datagen.entity_tables import (
    HOUR,
    Activities,
    Catalogue,
    EventArrays,
    Progress,
    activity_stats,
    forever_window,
    item_stats,
    labels,
    user_tables,
)
from scoring.datagen.events import ORACLE_COLUMNS, EventLog

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# Entity buckets per shuffle partition: a bucket is one applyInPandas call (its entities'
# events in one Python worker), so more buckets mean smaller calls.
BUCKETS_PER_PARTITION = 4
# Rows per record batch when the driver streams Spark's part files into one Parquet file.
MERGE_BATCH_ROWS = 65_536
STAGING = "_spark_build"  # data/_spark_build: staged events and Spark's part files
_ANCHOR = "__bucket__"  # one event per bucket (no item, no user tables): every bucket runs


@dataclass(frozen=True, slots=True)
class SparkTables:
    """The tables built on the driver (frames) and those Spark wrote (name -> Parquet path)."""

    frames: dict[str, pd.DataFrame]
    written: dict[str, Path]


@dataclass(frozen=True, slots=True)
class _Context:
    """What every bucket is handed (pickled into the UDFs' closures): entity-sized or less."""

    cat: Catalogue
    acts: Activities
    snaps: np.ndarray
    hourly: np.ndarray
    forever: int
    buckets: int


def build_tables_spark(
    log: EventLog,
    options: BuildOptions,
    progress: Progress | None,
    session: SparkSession,
    buckets: int | None = None,
) -> SparkTables:
    """Computes the tables of `build.build_tables` with the per-entity ones on Spark.

    Args:
        log: the event log.
        options: the data folder (the per-entity tables are written there as they finish)
            and the text cache.
        progress: called with each step's name (`build.BUILD_STEPS`).
        session: the Spark session (local mode or a cluster's).
        buckets: entity buckets; default shuffle partitions x BUCKETS_PER_PARTITION.
    """
    step = progress or (lambda _: None)
    session.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    n_buckets = buckets or BUCKETS_PER_PARTITION * int(
        session.conf.get("spark.sql.shuffle.partitions") or "8"
    )
    vocab = Vocab(options.vocab_path)
    ev = log.events
    arrays, snaps, user_ids, item_ids, u, i = index_log(log)
    t, has_item = arrays.t, arrays.has_item
    staging = options.data_dir / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    frames: dict[str, pd.DataFrame] = {}
    written: dict[str, Path] = {}
    try:
        step("items: catalogue")
        cat = log_catalogue(log, arrays, item_ids, i, snaps, vocab)
        acts = activity_catalogue(log.activities, vocab)
        a = acts.ids.get_indexer(ev["activity_id"])
        ctx = _Context(cat, acts, snaps, snapshot_times(t, HOUR), forever_window(t), n_buckets)
        events = _stage_events(session, log, arrays, u, i, a, ctx, staging / "events.parquet")

        step("items: text embeddings")
        frames["item_embedding"] = item_embedding(log.items, cat, options)

        step("items: daily statistics")
        by_item = events.filter("ib >= 0").unionByName(_anchors(session, events, "ib", ctx))
        job = _Job(session, staging, options.data_dir)
        fn_items = _ItemStats(ctx)
        written.update(job.run(by_item, "ib", fn_items, [_Output.whole("item_stats", fn_items)]))

        step("users: profiles")
        frames["user_profile"] = user_profile(log.users, user_ids, u, t, snaps, vocab)

        step("users: behaviour windows")
        # Bucketed once for the user tables and the labels (no second shuffle).
        by_user = events.repartition(n_buckets, "ub").persist()
        fn_users = _UserTables(ctx)
        # One pass: both tables have a row per active (user, snapshot), in the same order.
        written.update(job.run(by_user, "ub", fn_users, fn_users.outputs()))
        step("users: category affinity and recency")

        baskets = cross_entity_tables(log, arrays, u, i, cat, user_ids, snaps, frames, step)

        step("activities")
        by_act = events.filter("ab >= 0").unionByName(_anchors(session, events, "ab", ctx))
        fn_act = _ActivityStats(ctx)
        written.update(job.run(by_act, "ab", fn_act, [_Output.whole("activity_stats", fn_act)]))

        step("bundles")
        stats = pd.read_parquet(written["item_stats"])
        frames["bundle_stats"] = bundles_table(log, arrays, baskets, stats, cat)
        del stats

        step("labels")
        fn_labels = _Labels(ev)
        written.update(job.run(by_user, "ub", fn_labels, fn_labels.outputs()))
        if "bundle_id" not in ev:
            # A log without the column: no bundle impressions (the same columns, no rows).
            on_bundle = ev.iloc[:0].assign(bundle_id="")
            frames["impressions_bundle"] = labels(on_bundle, t[:0], has_item[:0], "bundle_id")
        by_user.unpersist()
        vocab.save()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SparkTables(frames, written)


def _stage_events(
    session: SparkSession,
    log: EventLog,
    ev: EventArrays,
    u: np.ndarray,
    i: np.ndarray,
    a: np.ndarray,
    ctx: _Context,
    path: Path,
) -> DataFrame:
    """Writes the columns the buckets read (with each event's buckets) to Parquet and
    returns them as a Spark DataFrame; a cluster reads them where the driver wrote them."""
    events = log.events
    staged = {
        "_row": np.arange(len(events), dtype=np.int64),  # the log's order (labels' ties)
        "t": ev.t.astype(np.int64),
        "user_id": events["user_id"].to_numpy(dtype=object),
        "item_id": events["item_id"].to_numpy(dtype=object),
        "event_type": ev.kind.astype(object),
        "qty": ev.qty,
        "spend": ev.spend,
        "activity_id": events["activity_id"].to_numpy(dtype=object),
        "ub": (u % ctx.buckets).astype(np.int64),
        "ib": np.where(i >= 0, i % ctx.buckets, -1).astype(np.int64),
        "ab": np.where(a >= 0, a % ctx.buckets, -1).astype(np.int64),
    }
    if "bundle_id" in events:
        staged["bundle_id"] = events["bundle_id"].to_numpy(dtype=object)
    for col in ORACLE_COLUMNS:
        if col in events:
            staged[col] = events[col].to_numpy(dtype=np.float64)
    table = pa.Table.from_pandas(pd.DataFrame(staged, copy=False), preserve_index=False)
    pq.write_table(table, path, row_group_size=MERGE_BATCH_ROWS)
    del table, staged
    return session.read.parquet(str(path))


def _anchors(session: SparkSession, events: DataFrame, bucket: str, ctx: _Context) -> DataFrame:
    """One event per bucket, on nothing: a bucket whose entities have no events still gets
    its call (an item is listed from its creation, a campaign from its announcement)."""
    from pyspark.sql import functions as F

    ids = session.range(ctx.buckets).withColumnRenamed("id", bucket)
    columns = []
    for field in events.schema.fields:
        if field.name == bucket:
            columns.append(F.col(bucket).cast("long"))
        elif field.name == "event_type":
            columns.append(F.lit(_ANCHOR).alias("event_type"))
        elif field.name in ("ub", "ib", "ab"):
            columns.append(F.lit(-1).cast("long").alias(field.name))
        elif field.dataType.simpleString() == "string":
            columns.append(F.lit("").alias(field.name))
        else:
            columns.append(F.lit(0).cast(field.dataType).alias(field.name))
    return ids.select(*columns)


def _arrays(pdf: pd.DataFrame) -> EventArrays:
    """A bucket's events as the build's arrays (anchors are on no item)."""
    return EventArrays(
        pdf["t"].to_numpy(dtype=np.int64),
        pdf["event_type"].to_numpy(dtype=object),
        pdf["item_id"].to_numpy(dtype=object) != "",
        pdf["qty"].to_numpy(dtype=np.float64),
        pdf["spend"].to_numpy(dtype=np.float64),
    )


@dataclass(frozen=True, slots=True)
class _Output:
    """A table written from a bucket function's output: its rows (`where`, a Spark SQL
    condition), its columns (output name -> file name, in file order) and row order."""

    name: str
    columns: dict[str, str]
    empty: pd.DataFrame  # the table's columns and dtypes, no rows
    where: str | None = None
    order: tuple[str, ...] = ()

    @classmethod
    def whole(cls, name: str, fn: _BucketFn) -> _Output:
        empty = fn.empty()
        return cls(name, {c: c for c in empty.columns}, empty)


class _BucketFn:
    """A function of one bucket's events (a pandas frame) to one frame of output rows."""

    def __call__(self, pdf: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def empty(self) -> pd.DataFrame:
        """The output of no events: the columns and their dtypes."""
        raise NotImplementedError


def _no_events(**extra: Any) -> pd.DataFrame:
    columns = {
        "_row": pd.Series(dtype=np.int64),
        "t": pd.Series(dtype=np.int64),
        "user_id": pd.Series(dtype=object),
        "item_id": pd.Series(dtype=object),
        "event_type": pd.Series(dtype=object),
        "qty": pd.Series(dtype=np.float64),
        "spend": pd.Series(dtype=np.float64),
        "activity_id": pd.Series(dtype=object),
        "ib": pd.Series(dtype=np.int64),
        "ab": pd.Series(dtype=np.int64),
    }
    return pd.DataFrame(columns | extra)


class _ItemStats(_BucketFn):
    """item_stats of the items in a bucket (item index % buckets == bucket)."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx

    def __call__(self, pdf: pd.DataFrame) -> pd.DataFrame:
        ctx = self.ctx
        ev = _arrays(pdf)
        i = np.where(ev.has_item, ctx.cat.item_ids.get_indexer(pdf["item_id"]), -1)
        if len(pdf):
            entities = np.arange(int(pdf["ib"].iloc[0]), len(ctx.cat.item_ids), ctx.buckets)
        else:
            entities = np.zeros(0, dtype=np.int64)
        return item_stats(ctx.cat, entities, i, ev, ctx.snaps, ctx.forever)

    def empty(self) -> pd.DataFrame:
        return self(_no_events())


class _UserTables(_BucketFn):
    """user_behavior and user_affinity side by side (the same rows) of a bucket's users."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx

    def tables(self, pdf: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        pdf = pdf.sort_values("_row", kind="stable")
        ev = _arrays(pdf)
        user_ids = pd.Index(pd.unique(pdf["user_id"]))
        u = user_ids.get_indexer(pdf["user_id"])
        i = np.where(ev.has_item, self.ctx.cat.item_ids.get_indexer(pdf["item_id"]), -1)
        return user_tables(user_ids, u, i, ev, self.ctx.cat.category, self.ctx.snaps)

    def __call__(self, pdf: pd.DataFrame) -> pd.DataFrame:
        behaviour, affinity = self.tables(pdf)
        shared = ["user_id", "event_timestamp"]
        return pd.concat([behaviour, affinity.drop(columns=shared)], axis=1)

    def empty(self) -> pd.DataFrame:
        return self(_no_events())

    def outputs(self) -> list[_Output]:
        behaviour, affinity = self.tables(_no_events())
        return [
            _Output(name, {c: c for c in table.columns}, table)
            for name, table in (("user_behavior", behaviour), ("user_affinity", affinity))
        ]


class _ActivityStats(_BucketFn):
    """activity_stats of the campaigns in a bucket (campaign index % buckets == bucket)."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx

    def __call__(self, pdf: pd.DataFrame) -> pd.DataFrame:
        ctx = self.ctx
        a = ctx.acts.ids.get_indexer(pdf["activity_id"])
        if len(pdf):
            entities = np.arange(int(pdf["ab"].iloc[0]), len(ctx.acts.ids), ctx.buckets)
        else:
            entities = np.zeros(0, dtype=np.int64)
        return activity_stats(ctx.acts, entities, a, _arrays(pdf), ctx.hourly, ctx.forever)

    def empty(self) -> pd.DataFrame:
        return self(_no_events())


# The labelled impressions: (candidate key, table); one pass writes all three.
_LABELS = (
    ("item_id", "impressions_item"),
    ("activity_id", "impressions_activity"),
    ("bundle_id", "impressions_bundle"),
)


class _Labels(_BucketFn):
    """The labelled impressions of a bucket's users, of every candidate kind stacked (`_table`:
    its index in _LABELS, `_key`: the candidate), with each impression's position in the log
    (`_row`: the files keep the pandas build's order: time, then the log's order)."""

    def __init__(self, events: pd.DataFrame) -> None:
        self.keys = [(n, key, table) for n, (key, table) in enumerate(_LABELS) if key in events]
        self.oracle = [c for c in ORACLE_COLUMNS if c in events]

    def __call__(self, pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.sort_values("_row", kind="stable").reset_index(drop=True)
        t = pdf["t"].to_numpy(dtype=np.int64)
        on_item = pdf["item_id"].to_numpy(dtype=object) != ""
        parts = []
        for n, key, _ in self.keys:
            rows = on_item if key == "item_id" else ~on_item
            out = labels(pdf, t, rows, key).rename(columns={key: "_key"})
            # labels() keeps the shown impressions in (time, log order): the same order here.
            shown = (
                rows & (pdf["event_type"].to_numpy() == "impression") & (pdf[key].to_numpy() != "")
            )
            out["_row"] = pdf["_row"].to_numpy()[shown][np.argsort(t[shown], kind="stable")]
            out["_table"] = np.full(len(out), n, dtype=np.int64)
            parts.append(out)
        return pd.concat(parts, ignore_index=True)

    def empty(self) -> pd.DataFrame:
        extra = {key: pd.Series(dtype=object) for _, key, _ in self.keys}
        extra |= {col: pd.Series(dtype=np.float64) for col in self.oracle}
        return self(_no_events(**extra))

    def outputs(self) -> list[_Output]:
        empty = self.empty()
        outputs = []
        for n, key, table in self.keys:
            columns = {c: key if c == "_key" else c for c in empty.columns if c[0] != "_"}
            columns = {"user_id": "user_id", "_key": key} | columns
            outputs.append(
                _Output(
                    table,
                    columns,
                    empty.rename(columns=columns)[list(columns.values())],
                    where=f"_table = {n}",
                    order=("request_ts", "_row"),
                )
            )
        return outputs


class _Job:
    """Runs a bucket function on Spark and writes its tables as data/<name>.parquet."""

    def __init__(self, session: SparkSession, staging: Path, data_dir: Path) -> None:
        self.session, self.staging, self.data_dir = session, staging, data_dir

    def run(
        self, events: DataFrame, bucket: str, fn: _BucketFn, outputs: list[_Output]
    ) -> dict[str, Path]:
        """Applies `fn` to each bucket's events and writes each of `outputs` from its rows."""
        schema, _ = _schemas(fn.empty())

        # A plain one-argument function: Spark reads the arity (2 would pass the key too).
        def per_bucket(pdf: pd.DataFrame) -> pd.DataFrame:
            return fn(pdf)

        out = events.groupBy(bucket).applyInPandas(per_bucket, schema)
        # Kept when read more than once (several tables, or a sort's sampling pass), so that
        # the buckets run once.
        kept = len(outputs) > 1 or any(o.order for o in outputs)
        if kept:
            out = out.persist()
        written = {}
        try:
            for o in outputs:
                table = out if o.where is None else out.filter(o.where)
                if o.order:
                    table = table.orderBy(*o.order)
                table = table.select(*[table[c].alias(name) for c, name in o.columns.items()])
                parts = self.staging / o.name
                table.write.mode("overwrite").parquet(str(parts))
                _, target = _schemas(o.empty)
                written[o.name] = _merge_parts(parts, self.data_dir / f"{o.name}.parquet", target)
        finally:
            if kept:
                out.unpersist()
        return written


def _schemas(frame: pd.DataFrame) -> tuple[StructType, pa.Schema]:
    """The Spark schema of a table's frame and the Arrow schema the pandas build writes."""
    from pyspark.sql import types as T

    spark_fields, arrow_fields = [], []
    spark_type: T.DataType
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.DatetimeTZDtype):
            spark_type, arrow_type = T.TimestampType(), pa.timestamp("ns", tz="UTC")
        elif dtype == np.dtype(object):
            spark_type, arrow_type = T.StringType(), pa.string()
        elif dtype == np.dtype(np.float32):
            spark_type, arrow_type = T.FloatType(), pa.float32()
        elif dtype == np.dtype(np.float64):
            spark_type, arrow_type = T.DoubleType(), pa.float64()
        elif dtype == np.dtype(np.int64):
            spark_type, arrow_type = T.LongType(), pa.int64()
        else:
            raise TypeError(f"{name}: no Spark type for {dtype}")
        spark_fields.append(T.StructField(str(name), spark_type))
        arrow_fields.append(pa.field(str(name), arrow_type))
    metadata = pa.Schema.from_pandas(frame, preserve_index=False).metadata
    return T.StructType(spark_fields), pa.schema(arrow_fields, metadata)


def _batches(parts: Path, target: pa.Schema) -> Iterator[pa.RecordBatch]:
    for part in sorted(parts.glob("part-*.parquet")):
        for batch in pq.ParquetFile(part).iter_batches(batch_size=MERGE_BATCH_ROWS):
            yield pa.RecordBatch.from_arrays(
                [batch.column(f.name).cast(f.type) for f in target], schema=target
            )


def _merge_parts(parts: Path, path: Path, target: pa.Schema) -> Path:
    """Spark's part files, in order, as one Parquet file (temp file, then rename), a record
    batch at a time."""
    tmp = path.with_suffix(".parquet.tmp")
    with pq.ParquetWriter(tmp, target) as writer:
        for batch in _batches(parts, target):
            writer.write_batch(batch, row_group_size=MERGE_BATCH_ROWS)
    tmp.replace(path)
    shutil.rmtree(parts, ignore_errors=True)
    return path


__all__ = ["BUCKETS_PER_PARTITION", "SparkTables", "build_tables_spark"]
