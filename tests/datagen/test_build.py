"""The feature build: exact windows, no future events, stable codes, labels, cold-start text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.datagen.build import AFFINITY_SLOTS, DAY, Windows, snapshot_times
from scoring.datagen.dataset import DataSet, build_data_set
from scoring.datagen.events import EventLog
from scoring.datagen.synthetic import SyntheticConfig, generate
from scoring.trainer.ranking_metrics import auc

from ..conftest import TEXT_CACHE

END = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[EventLog, DataSet]:
    log = generate(SyntheticConfig(300, 150, 20, 20_000, 5000, days=14, end=END))
    data = build_data_set(log, tmp_path_factory.mktemp("data"), text_cache=TEXT_CACHE)
    return log, data


def test_windows_count_only_events_in_the_half_open_window() -> None:
    entity = np.array([0, 0, 0, 1, 1])
    t = np.array([100, 200, 300, 100, 400])
    win = Windows(entity, t, np.array([1.0, 2.0, 4.0, 8.0, 16.0]))
    q_entity, q_t = np.array([0, 0, 0, 1, 1]), np.array([200, 301, 300, 400, 401])
    np.testing.assert_array_equal(win.total(q_entity, q_t, 150), [1.0, 6.0, 2.0, 0.0, 16.0])
    np.testing.assert_array_equal(win.last_before(q_entity, q_t), [100, 300, 200, 100, 400])
    assert np.isnan(win.last_before(np.array([2]), np.array([500]))[0])


def test_snapshots_are_midnights_and_the_end() -> None:
    t = np.array([DAY * 10 + 5, DAY * 12 + 7])
    np.testing.assert_array_equal(snapshot_times(t), [DAY * 10, DAY * 11, DAY * 12, DAY * 12 + 8])


def test_behaviour_windows_match_a_brute_force_count(built: tuple[EventLog, DataSet]) -> None:
    log, data = built
    ev = log.events
    t = ev["timestamp"].astype("int64").to_numpy() // 10**9
    rows = data.tables["user_behavior"].sample(200, random_state=0)
    for _, row in rows.iterrows():
        snap = int(row["event_timestamp"].timestamp())
        mine = (ev["user_id"].to_numpy() == row["user_id"]) & (t < snap)
        for kind, name in (("click", "clicks"), ("view", "views"), ("purchase", "purchases")):
            for suffix, days in (("1d", 1), ("7d", 7), ("30d", 30)):
                expected = (
                    mine & (ev["event_type"].to_numpy() == kind) & (t >= snap - days * DAY)
                ).sum()
                assert row[f"{name}_{suffix}"] == expected, (row["user_id"], name, suffix)


def test_labels_follow_the_planted_probability(built: tuple[EventLog, DataSet]) -> None:
    _, data = built
    shown = data.tables["impressions_item"]
    assert {"clicked", "purchased", "p_click", "p_purchase", "request_ts"} <= set(shown.columns)
    assert abs(shown["clicked"].mean() - shown["p_click"].mean()) < 0.02
    assert auc(shown["clicked"].to_numpy(), shown["p_click"].to_numpy()) > 0.65
    assert shown["purchased"].sum() > 0
    act = data.tables["impressions_activity"]
    assert abs(act["clicked"].mean() - act["p_click"].mean()) < 0.03


def test_every_item_has_catalogue_values_and_an_embedding_from_creation(
    built: tuple[EventLog, DataSet],
) -> None:
    log, data = built
    stats, emb = data.tables["item_stats"], data.tables["item_embedding"]
    first = stats.sort_values("event_timestamp").groupby("item_id").head(1).set_index("item_id")
    created = log.items.set_index("item_id")["created_at"]
    assert (first["event_timestamp"] == created.reindex(first.index)).all()
    assert (first["sales_30d"] == 0).all() and (first["category"] >= 0).all()
    assert set(emb["item_id"]) == set(log.items["item_id"])
    vectors = np.stack(emb["embedding"].to_numpy())
    assert vectors.shape == (len(log.items), 16) and np.isfinite(vectors).all()


def test_text_embedding_carries_category_for_cold_start(built: tuple[EventLog, DataSet]) -> None:
    """Items of one category sit closer to each other than to other categories."""
    log, data = built
    emb = data.tables["item_embedding"].set_index("item_id")["embedding"]
    category = log.items.set_index("item_id")["category"]
    x = np.stack(emb.to_numpy())
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    same = category.reindex(emb.index).to_numpy()
    sim = x @ x.T
    within = sim[same[:, None] == same[None, :]].mean()
    across = sim[same[:, None] != same[None, :]].mean()
    assert within > across + 0.2


def test_codes_and_projection_stay_stable_across_rebuilds(
    built: tuple[EventLog, DataSet], tmp_path: Path
) -> None:
    log, _ = built
    first = build_data_set(log, tmp_path, text_cache=TEXT_CACHE)
    (tmp_path / "item_stats.parquet").unlink()
    again = build_data_set(log, tmp_path, text_cache=TEXT_CACHE)
    pd.testing.assert_frame_equal(first.tables["item_stats"], again.tables["item_stats"])
    pd.testing.assert_frame_equal(first.tables["item_embedding"], again.tables["item_embedding"])
    assert (tmp_path / "vocab.json").exists() and (tmp_path / "text_projection.npz").exists()


def test_category_history_matches_a_brute_force_count(built: tuple[EventLog, DataSet]) -> None:
    """views_90d_XX / impressions_90d_XX: the user's events on items whose category code falls
    in slot XX (code % 16), in the 90 days before the snapshot."""
    log, data = built
    ev = log.events
    t = ev["timestamp"].astype("int64").to_numpy() // 10**9
    codes = json.loads((data.paths[0].parent / "vocab.json").read_text())["category"]
    item_slot = log.items.set_index("item_id")["category"].map(codes.index) % AFFINITY_SLOTS
    slot = ev["item_id"].map(item_slot).fillna(-1).to_numpy(dtype=np.int64)
    rows = data.tables["user_affinity"].sample(100, random_state=1)
    for _, row in rows.iterrows():
        snap = int(row["event_timestamp"].timestamp())
        mine = (ev["user_id"].to_numpy() == row["user_id"]) & (t < snap) & (t >= snap - 90 * DAY)
        for kind, name in (("view", "views_90d"), ("impression", "impressions_90d")):
            on_items = mine & (ev["event_type"].to_numpy() == kind) & (slot >= 0)
            counts = np.bincount(slot[on_items], minlength=AFFINITY_SLOTS)
            got = [row[f"{name}_{s:02d}"] for s in range(AFFINITY_SLOTS)]
            np.testing.assert_array_equal(got, counts, err_msg=f"{row['user_id']} {name}")


def test_campaign_statistics_are_hourly_while_a_campaign_runs(
    built: tuple[EventLog, DataSet],
) -> None:
    log, data = built
    stats = data.tables["activity_stats"]
    ev = log.events
    t = ev["timestamp"].astype("int64").to_numpy() // 10**9
    shown = (ev["event_type"] == "impression").to_numpy() & (ev["item_id"] == "").to_numpy()
    campaign = log.activities.iloc[0]
    rows = stats[stats["activity_id"] == campaign["activity_id"]]
    at = rows["event_timestamp"].astype("int64").to_numpy() // 10**9
    # Hourly from the start to the end (or to the log's last snapshot, which is not on the hour).
    running = (at > campaign["start_at"].timestamp()) & (at < campaign["end_at"].timestamp())
    running &= at < at.max()
    assert running.sum() > 1 and (np.diff(at[running]) == 3600).all()
    for when, total in zip(at, rows["impressions_total"], strict=True):
        mine = shown & (ev["activity_id"] == campaign["activity_id"]).to_numpy() & (t < when)
        assert total == mine.sum()
