"""Served-feature log: what each sampled request was scored with, appended as Parquet.

The hot path only appends a record to an in-memory queue; a writer thread turns batches into
Parquet files under `<dir>/target=<model>/date=<YYYY-MM-DD>/` (one row per candidate: the exact
feature vector, model version, score and rank), so training can join future labels (clicks with
the request id) to what was served. `close()` drains the queue: nothing accepted is lost on a
clean shutdown.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scoring.core.writer import BackgroundWriter

logger = logging.getLogger(__name__)
_TICK = object()  # the writer woke up without a record: time to check the flush interval


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
    """Non-blocking append, background Parquet writes, complete flush on close."""

    def __init__(
        self,
        directory: Path,
        sample_rate: float = 1.0,
        flush_rows: int = 5000,
        flush_interval_s: float = 5.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.rows_written = 0
        super().__init__("feature-log", directory)

    def append(self, record: ServedRequest) -> bool:
        """Queues `record` if sampled; returns whether it was accepted. Never blocks."""
        return sampled(record.request_id, self.sample_rate) and self._put(record)

    def _run(self) -> None:
        pending: list[ServedRequest] = []
        rows = 0
        last_flush = time.monotonic()
        while True:
            timeout = max(self.flush_interval_s - (time.monotonic() - last_flush), 0.01)
            item: object
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = _TICK
            stop = item is None
            if isinstance(item, ServedRequest):
                pending.append(item)
                rows += len(item.candidate_ids)
            due = time.monotonic() - last_flush >= self.flush_interval_s
            if pending and (stop or due or rows >= self.flush_rows):
                try:
                    self._write(pending)
                except Exception:
                    logger.exception("feature_log_write_failed records=%d", len(pending))
                pending, rows = [], 0
            if due or stop:
                last_flush = time.monotonic()
            if stop:
                return

    def _write(self, records: list[ServedRequest]) -> None:
        by_target: dict[tuple[str, str], list[ServedRequest]] = {}
        for r in records:
            day = datetime.fromtimestamp(r.served_at, UTC).strftime("%Y-%m-%d")
            by_target.setdefault((r.target, day), []).append(r)
        for (target, day), group in by_target.items():
            table = _to_table(group)
            folder = self.directory / f"target={target}" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{uuid.uuid4().hex}.parquet"
            tmp = path.with_name(f".{path.name}.tmp")
            pq.write_table(table, tmp)
            tmp.replace(path)  # readers never see a partial file
            self.rows_written += table.num_rows


def _to_table(records: list[ServedRequest]) -> pa.Table:
    counts = [len(r.candidate_ids) for r in records]

    def per_row(values: list[object]) -> list[object]:
        return [v for v, n in zip(values, counts, strict=True) for _ in range(n)]

    features = np.concatenate([r.features for r in records]).astype(np.float32)
    width = features.shape[1]
    flat = pa.array(features.reshape(-1), type=pa.float32())
    return pa.table(
        {
            "request_id": per_row([r.request_id for r in records]),
            "served_at": pa.array(
                per_row([int(r.served_at * 1_000_000) for r in records]), pa.timestamp("us", "UTC")
            ),
            "user_id": per_row([r.user_id for r in records]),
            "target": per_row([r.target for r in records]),
            "model_version": per_row([r.model_version for r in records]),
            "schema_hash": per_row([r.schema_hash for r in records]),
            "degraded": per_row([r.degraded for r in records]),
            "candidate_id": [c for r in records for c in r.candidate_ids],
            "score": np.concatenate([r.scores for r in records]).astype(np.float32),
            "rank": np.concatenate([r.ranks for r in records]).astype(np.int32),
            "features": pa.FixedSizeListArray.from_arrays(flat, width),
        }
    )
