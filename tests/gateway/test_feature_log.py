"""Served-feature log: sampled, non-blocking, complete after close, exact vectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from prometheus_client import generate_latest

from scoring.core.privacy import Pseudonymizer
from scoring.gateway.feature_log import FeatureLog, ServedLogPolicy, ServedRequest, sampled
from scoring.gateway.prometheus import GatewayMetrics


def record(
    request_id: str,
    n: int = 3,
    target: str = "item_ranker",
    user_id: str = "u_1",
    served_at: float = 1_700_000_000.0,
) -> ServedRequest:
    rng = np.random.default_rng(abs(hash(request_id)) % 2**32)
    return ServedRequest(
        request_id=request_id,
        served_at=served_at,
        user_id=user_id,
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


def test_listed_fields_are_dropped_or_written_as_keyed_hashes(tmp_path: Path) -> None:
    pseudonym = Pseudonymizer(b"k" * 32)
    policy = ServedLogPolicy(frozenset({"score"}), frozenset({"user_id"}), pseudonym)
    log = FeatureLog(tmp_path, policy=policy)
    log.append(record("r1", user_id="u_000042"))
    log.append(record("r2", user_id="u\x00evil"))
    log.close()
    (path,) = tmp_path.rglob("*.parquet")
    table = pq.ParquetFile(path).read()
    assert "score" not in table.column_names
    assert set(table.column("user_id").to_pylist()) == {
        pseudonym("u_000042"),
        pseudonym("u\x00evil"),
    }
    assert table.column("request_id").to_pylist() == ["r1"] * 3 + ["r2"] * 3


def test_a_policy_naming_an_unknown_or_unhashable_column_is_refused() -> None:
    with pytest.raises(ValueError, match="no column"):
        ServedLogPolicy(drop=frozenset({"user"}))
    with pytest.raises(ValueError, match="can be hashed"):
        ServedLogPolicy(hashed=frozenset({"score"}), pseudonym=Pseudonymizer(b"k" * 32))
    with pytest.raises(ValueError, match="pseudonym"):
        ServedLogPolicy(hashed=frozenset({"user_id"}))


def test_failed_writes_are_kept_and_retried_and_the_bound_drops_visibly(tmp_path: Path) -> None:
    directory = tmp_path / "served"
    directory.write_text("a file where the log's folder should be: every write fails")
    log = FeatureLog(directory, flush_rows=1, flush_interval_s=3600, max_rows=10, retry_s=0.01)
    metrics = GatewayMetrics()
    metrics.track_feature_log(log)
    accepted = [log.append(record(f"r{i}", n=3)) for i in range(5)]
    # Nothing can be written, so the bound (10 rows) holds 3 requests of 3 rows; the rest are
    # refused at once, counted, and never block the caller.
    assert accepted == [True, True, True, False, False]
    assert log.write_failed.wait(30), "the writer tried and failed"
    assert (log.pending_rows, log.dropped_rows) == (9, 6)
    scraped = generate_latest(metrics.registry).decode()
    assert 'scoring_feature_log_dropped_rows_total{reason="queue_full"} 6.0' in scraped
    assert "scoring_feature_log_pending_rows 9.0" in scraped

    directory.unlink()  # the disk is back
    log.close()
    assert log.lost_rows == 0 and log.pending_rows == 0
    assert sorted(map(str, set(read(directory)["request_id"]))) == ["r0", "r1", "r2"]
    assert len(read(directory)["request_id"]) == 9, "no row lost, none written twice"


def test_rows_still_unwritable_at_close_are_counted_as_lost(tmp_path: Path) -> None:
    directory = tmp_path / "served"
    directory.write_text("never a folder")
    log = FeatureLog(directory, retry_s=0.01, close_retry_s=0.05)
    log.append(record("r0", n=4))
    log.close()
    assert (log.lost_rows, log.pending_rows) == (4, 0)


def test_day_folders_past_the_retention_are_deleted(tmp_path: Path) -> None:
    today = datetime.now(UTC)
    old = tmp_path / "target=item_ranker" / f"date={(today - timedelta(days=40)):%Y-%m-%d}"
    recent = tmp_path / "target=item_ranker" / f"date={(today - timedelta(days=3)):%Y-%m-%d}"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "part-x.parquet").write_bytes(b"")
    log = FeatureLog(tmp_path, retention_days=30)
    log.append(record("r0", served_at=today.timestamp()))
    log.close()
    assert not old.exists() and recent.exists()
    assert len(list(tmp_path.rglob("part-*.parquet"))) == 2
