"""Served-feature log: sampled, non-blocking, complete after close, exact vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

from scoring.gateway.feature_log import FeatureLog, ServedRequest, sampled


def record(request_id: str, n: int = 3, target: str = "item_ranker") -> ServedRequest:
    rng = np.random.default_rng(abs(hash(request_id)) % 2**32)
    return ServedRequest(
        request_id=request_id,
        served_at=1_700_000_000.0,
        user_id="u_1",
        target=target,
        model_version="4",
        schema_hash="abc",
        candidate_ids=tuple(f"i_{i}" for i in range(n)),
        features=rng.random((n, 5), dtype=np.float32),
        scores=rng.random(n, dtype=np.float32),
        ranks=np.arange(1, n + 1, dtype=np.int32),
        degraded=False,
    )


def read(directory: Path) -> dict[str, list[object]]:
    return dict(ds.dataset(directory, format="parquet", partitioning="hive").to_table().to_pydict())


def test_everything_accepted_is_written_by_close(tmp_path: Path) -> None:
    log = FeatureLog(tmp_path, flush_rows=10_000, flush_interval_s=3600)
    records = [record(f"r{i}", n=i + 1) for i in range(20)]
    assert all(log.append(r) for r in records)
    log.close()
    table = read(tmp_path)
    assert len(table["request_id"]) == sum(len(r.candidate_ids) for r in records) == 210
    first = [i for i, rid in enumerate(table["request_id"]) if rid == "r4"]
    got = np.array([table["features"][i] for i in first], dtype=np.float32)
    np.testing.assert_array_equal(got, records[4].features)
    assert [table["candidate_id"][i] for i in first] == list(records[4].candidate_ids)
    assert not list(tmp_path.rglob(".*.tmp")), "no partial files left"
    assert not log.append(record("late")), "closed logs accept nothing"


def test_small_flush_threshold_writes_several_files(tmp_path: Path) -> None:
    log = FeatureLog(tmp_path, flush_rows=5, flush_interval_s=3600)
    for i in range(10):
        log.append(record(f"r{i}", n=3, target="activity_ranker"))
    log.close()
    files = list((tmp_path / "target=activity_ranker").rglob("*.parquet"))
    assert len(files) >= 2
    assert len(read(tmp_path)["request_id"]) == 30


def test_sampling_is_deterministic_and_close_to_the_rate() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    kept = [sampled(i, 0.1) for i in ids]
    assert kept == [sampled(i, 0.1) for i in ids]
    assert abs(sum(kept) / len(ids) - 0.1) < 0.01
    assert all(sampled(i, 1.0) for i in ids[:10])
    assert not any(sampled(i, 0.0) for i in ids[:100])
