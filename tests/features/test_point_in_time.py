"""Point-in-time correctness: a training row never sees a feature value from after its time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from ..as_of import as_of

TTL = pd.Timedelta(days=2)  # user_behavior and item_stats


@pytest.fixture(scope="module")
def training(feature_repo_ready: Any) -> pd.DataFrame:
    store = feature_repo_ready.store()
    rows = feature_repo_ready.data.tables["impressions_item"]
    keep = ["user_id", "item_id", "event_timestamp", "request_ts", "clicked"]
    frame = store.get_historical_features(
        entity_df=rows[keep],
        features=store.get_feature_service("item_ranker_v1"),
        full_feature_names=True,
    ).to_df()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.reset_index(drop=True)


@pytest.mark.parametrize(
    ("table", "key", "column"),
    [
        ("user_behavior", "user_id", "clicks_7d"),
        ("user_behavior", "user_id", "ctr_30d"),
        ("item_stats", "item_id", "sales_7d"),
        ("user_affinity", "user_id", "top_category_share"),
    ],
)
def test_training_rows_join_the_last_snapshot_at_or_before_their_time(
    training: pd.DataFrame, feature_repo_ready: Any, table: str, key: str, column: str
) -> None:
    expected = as_of(training, feature_repo_ready.data.tables[table], key, column, TTL)
    got = training[f"{table}__{column}"].astype("float64")
    np.testing.assert_allclose(got.to_numpy(), expected.astype("float64").to_numpy(), rtol=1e-6)


def test_behaviour_counts_never_include_events_after_the_row(
    training: pd.DataFrame, feature_repo_ready: Any
) -> None:
    """Checked against the raw event log: clicks_7d at a row's time counts only earlier clicks,
    so it never exceeds the user's clicks in the 7 days (+ 1 day of snapshot lag) before it."""
    events = feature_repo_ready.log.events
    clicks = events[events["event_type"] == "click"]
    by_user = {
        u: np.sort(g["timestamp"].astype("int64").to_numpy()) for u, g in clicks.groupby("user_id")
    }
    t = training["event_timestamp"].astype("int64").to_numpy()
    users = training["user_id"].to_numpy()
    got = training["user_behavior__clicks_7d"].fillna(0).to_numpy()
    bound = np.array(
        [
            np.searchsorted(by_user.get(u, np.empty(0)), ti, side="left")
            - np.searchsorted(by_user.get(u, np.empty(0)), ti - 8 * 86_400 * 10**9, side="left")
            for u, ti in zip(users, t, strict=True)
        ]
    )
    assert (got <= bound).all(), "a feature counted a click that happened after the row"
    assert got.sum() > 0.5 * bound.sum(), "the bound is not vacuous"
