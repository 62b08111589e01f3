"""Served-feature log: what each sampled request was scored with, appended as Parquet.

The hot path only appends a record to an in-memory queue; a writer thread turns batches into
Parquet files under `<dir>/target=<model>/date=<YYYY-MM-DD>/` (one row per candidate: the exact
feature vector, model version, score and rank), so training can join future labels (clicks with
the request id) to what was served. `close()` drains the queue: nothing accepted is lost on a
clean shutdown.

What a row keeps follows a `ServedLogPolicy` (columns dropped, columns written as keyed hashes:
the user id by default). Memory is bounded: at most `max_rows` candidate rows wait, queued or
kept while a failed write is retried with backoff; past the bound a request is not logged and
counted (`dropped_rows`), never waited for. Day folders older than `retention_days` are
deleted as days roll over.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.core.writer import BackgroundWriter

logger = logging.getLogger(__name__)
_TICK = object()  # the writer woke up without a record: time to check the flush interval

# The columns of a served-feature log file, and those a policy may write as keyed hashes.
COLUMNS = (
    "request_id",
    "served_at",
    "user_id",
    "target",
    "model_version",
    "schema_hash",
    "degraded",
    "candidate_id",
    "score",
    "rank",
    "features",
)
HASHABLE = ("user_id", "request_id", "candidate_id")


@dataclass(frozen=True, slots=True)
class ServedLogPolicy:
    """Which columns the served-feature log leaves out and which it writes as keyed hashes.

    Hashing `request_id` or dropping `features` makes the log useless for training from what
    was served (`scoring train --served`), which joins Feedback by request id.
    """

    drop: frozenset[str] = frozenset()
    hashed: frozenset[str] = frozenset()
    pseudonym: Callable[[str], str] | None = None

    def __post_init__(self) -> None:
        unknown = sorted((self.drop | self.hashed) - set(COLUMNS))
        if unknown:
            raise ValueError(f"served-feature log: no column {unknown}; columns: {COLUMNS}")
        if not self.hashed <= set(HASHABLE):
            raise ValueError(f"served-feature log: only {HASHABLE} can be hashed")
        if self.hashed and self.pseudonym is None:
            raise ValueError("served-feature log: hashed columns need a pseudonym")


@dataclass(frozen=True, slots=True)
class ServedRequest:
    """One scored request as the model saw it."""

    request_id: str
    served_at: float
    user_id: str
    target: str
    model_version: str
    schema_hash: str
    candidate_ids: tuple[str, ...]
    features: np.ndarray  # [n, width] float32, exactly the model input
    scores: np.ndarray  # [n]
    ranks: np.ndarray  # [n] 1-based position, 0 when not returned
    degraded: bool


def sampled(request_id: str, rate: float) -> bool:
    """Deterministic per request id, so retries of one request are logged alike."""
    if rate >= 1.0:
        return True
    digest = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")
    return digest / 2**64 < rate


class FeatureLog(BackgroundWriter[ServedRequest]):
    """Non-blocking append, background Parquet writes, complete flush on close.

    Args:
        max_rows: candidate rows held in memory at most (queued, pending or being retried).
        retention_days: day folders older than this are deleted (0: kept).
        retry_s: the first retry's delay after a failed write; it doubles up to `retry_max_s`.
        close_retry_s: how long `close` keeps retrying a failing write before giving up.
    """

    def __init__(
        self,
        directory: Path,
        sample_rate: float = 1.0,
        flush_rows: int = 5000,
        flush_interval_s: float = 5.0,
        *,
        max_rows: int = 200_000,
        policy: ServedLogPolicy | None = None,
        retention_days: int = 0,
        retry_s: float = 0.5,
        retry_max_s: float = 30.0,
        close_retry_s: float = 10.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.max_rows = max_rows
        self.policy = policy or ServedLogPolicy()
        self.rows_written = 0
        self.dropped_rows = 0  # not logged: the memory bound was reached
        self.lost_rows = 0  # accepted, but still unwritable when closed
        self._held_rows = 0  # accepted and not yet written
        self._lock = threading.Lock()
        self._dropping = False
        super().__init__(
            "feature-log",
            directory,
            retention_days=retention_days,
            retry_s=retry_s,
            retry_max_s=retry_max_s,
            close_retry_s=close_retry_s,
        )

    @property
    def pending_rows(self) -> int:
        """Candidate rows accepted and not written yet."""
        return self._held_rows

    def append(self, record: ServedRequest) -> bool:
        """Queues `record` if sampled and within the memory bound; returns whether it was
        accepted. Never blocks."""
        if not sampled(record.request_id, self.sample_rate):
            return False
        rows = len(record.candidate_ids)
        with self._lock:
            full = self._held_rows + rows > self.max_rows
            if full:
                self.dropped_rows += rows
            else:
                self._held_rows += rows
            warn, self._dropping = full and not self._dropping, full
        if full:
            if warn:
                logger.warning(
                    "feature_log_full held_rows=%d max_rows=%d: requests are not logged "
                    "until writes catch up (scoring_feature_log_dropped_rows_total)",
                    self._held_rows,
                    self.max_rows,
                )
            return False
        if not self._put(record):
            self._release(rows)
            return False
        return True

    def _release(self, rows: int) -> None:
        with self._lock:
            self._held_rows -= rows

    def _run(self) -> None:
        pending: list[ServedRequest] = []
        rows = 0
        last_flush = time.monotonic()
        retry_at: float | None = None  # set while a failed write waits to be retried
        delay = self.retry_s
        self._expire()
        while True:
            wake = last_flush + self.flush_interval_s if retry_at is None else retry_at
            item: object
            try:
                item = self._queue.get(timeout=max(wake - time.monotonic(), 0.01))
            except queue.Empty:
                item = _TICK
            stop = item is None
            if isinstance(item, ServedRequest):
                pending.append(item)
                rows += len(item.candidate_ids)
            now = time.monotonic()
            due = now - last_flush >= self.flush_interval_s
            if retry_at is not None:
                go = now >= retry_at  # a failing disk is not hammered on every record
            else:
                go = stop or due or rows >= self.flush_rows
            if pending and go:
                pending = self._flush(pending)
                rows = sum(len(r.candidate_ids) for r in pending)
                if pending:
                    retry_at, delay = now + delay, min(delay * 2, self.retry_max_s)
                else:
                    retry_at, delay = None, self.retry_s
            if due or stop:
                last_flush = now
            if stop:
                self._finish(pending)
                return

    def _give_up(self, pending: list[ServedRequest]) -> None:
        lost = sum(len(r.candidate_ids) for r in pending)
        self.lost_rows += lost
        self._release(lost)
        logger.error("feature_log_lost rows=%d: %s stayed unwritable", lost, self.directory)

    def _flush(self, records: list[ServedRequest]) -> list[ServedRequest]:
        """Writes `records` (one file per target and day); returns those not written."""
        by_target: dict[tuple[str, str], list[ServedRequest]] = {}
        for r in records:
            day = datetime.fromtimestamp(r.served_at, UTC).strftime("%Y-%m-%d")
            by_target.setdefault((r.target, day), []).append(r)
        left: list[ServedRequest] = []
        for (target, day), group in by_target.items():
            try:
                self._write(target, day, group)
            except Exception:
                self.write_failures += 1
                self.write_failed.set()
                logger.exception("feature_log_write_failed records=%d (kept, retried)", len(group))
                left.extend(group)
            else:
                self._release(sum(len(r.candidate_ids) for r in group))
        self._expire()
        return left

    def _write(self, target: str, day: str, records: list[ServedRequest]) -> None:
        table = _to_table(records, self.policy)
        folder = self.directory / f"target={target}" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{uuid.uuid4().hex}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)  # readers never see a partial file
        self.rows_written += table.num_rows


def _to_table(records: list[ServedRequest], policy: ServedLogPolicy) -> pa.Table:
    counts = [len(r.candidate_ids) for r in records]
    seen: dict[str, str] = {}

    def ids(name: str, values: list[str]) -> list[str]:
        if name not in policy.hashed:
            return values
        assert policy.pseudonym is not None
        pseudonym = policy.pseudonym
        return [seen[v] if v in seen else seen.setdefault(v, pseudonym(v)) for v in values]

    def per_row(values: Sequence[object]) -> list[object]:
        return [v for v, n in zip(values, counts, strict=True) for _ in range(n)]

    features = np.concatenate([r.features for r in records]).astype(np.float32)
    width = features.shape[1]
    flat = pa.array(features.reshape(-1), type=pa.float32())
    columns: dict[str, object] = {
        "request_id": per_row(ids("request_id", [r.request_id for r in records])),
        "served_at": pa.array(
            per_row([int(r.served_at * 1_000_000) for r in records]), pa.timestamp("us", "UTC")
        ),
        "user_id": per_row(ids("user_id", [r.user_id for r in records])),
        "target": per_row([r.target for r in records]),
        "model_version": per_row([r.model_version for r in records]),
        "schema_hash": per_row([r.schema_hash for r in records]),
        "degraded": per_row([r.degraded for r in records]),
        "candidate_id": ids("candidate_id", [c for r in records for c in r.candidate_ids]),
        "score": np.concatenate([r.scores for r in records]).astype(np.float32),
        "rank": np.concatenate([r.ranks for r in records]).astype(np.int32),
        "features": pa.FixedSizeListArray.from_arrays(flat, width),
    }
    return pa.table({k: v for k, v in columns.items() if k not in policy.drop})
