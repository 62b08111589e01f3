"""The synthetic event stream: deterministic, realistic funnel, planted truth the features carry."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from scoring.datagen.synthetic import SyntheticConfig, generate

END = datetime(2026, 3, 1, tzinfo=UTC)
CFG = SyntheticConfig(120, 80, 12, 4000, 1500, days=14, organic_per_user=10, end=END)


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b = generate(CFG), generate(CFG)
    pd.testing.assert_frame_equal(a.events, b.events)
    c = generate(dataclasses.replace(CFG, seed=8))
    assert not c.events.equals(a.events)


def test_event_stream_is_a_funnel_in_time_with_planted_probabilities() -> None:
    log = generate(CFG)
    ev = log.events
    counts = ev["event_type"].value_counts()
    assert counts["impression"] > counts["click"] > counts["purchase"] > 0
    assert counts["view"] > counts["add_to_cart"] > counts["purchase"]
    assert ev["timestamp"].is_monotonic_increasing
    assert ev["timestamp"].max() < pd.Timestamp(END)
    assert ev["timestamp"].min() >= pd.Timestamp(END) - pd.Timedelta(days=14)
    shown = ev[ev["event_type"] == "impression"]
    assert shown["p_click"].between(0, 1).all()
    item_shown = shown[shown["item_id"] != ""]
    assert (item_shown["p_purchase"] < item_shown["p_click"]).all()
    buys = ev[ev["event_type"] == "purchase"]
    assert (buys["price"] > 0).all() and (buys["quantity"] >= 1).all()
    # Every campaign event names a known campaign; item ids and user ids come from the tables.
    assert set(ev.loc[ev["activity_id"] != "", "activity_id"]) <= set(log.activities["activity_id"])
    assert set(ev.loc[ev["item_id"] != "", "item_id"]) <= set(log.items["item_id"])
    assert set(ev["user_id"]) <= set(log.users["user_id"])


def test_some_items_and_users_are_new_during_the_window() -> None:
    log = generate(CFG)
    start = pd.Timestamp(END) - pd.Timedelta(days=14)
    assert (log.items["created_at"] > start).mean() > 0.05
    assert (log.users["signup_at"] > start).mean() > 0.05
    assert log.items["title"].str.len().gt(10).all()


def test_large_preset_is_millions_of_events() -> None:
    large = SyntheticConfig.large()
    impressions = large.n_item_impressions + large.n_activity_impressions
    assert impressions + large.n_users * large.organic_per_user > 2_000_000
    assert np.isclose(SyntheticConfig().days, 35)
