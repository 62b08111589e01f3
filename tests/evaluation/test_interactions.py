"""Positives read from the kept event log: which events count, their weights, clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from scoring.evaluation import EventLogMissingError, PositiveEvents, load_interactions

EVENTS = pd.DataFrame(
    {
        "user_id": ["b", "a", "a", "b", "a", "c"],
        "item_id": ["y", "x", "x", "", "z", "y"],
        "event_type": ["impression", "view", "purchase", "click", "add_to_cart", "click"],
        "timestamp": pd.to_datetime(
            ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-03", "2026-01-01", "2026-01-05"],
            utc=True,
        ),
        "price": 1.0,
        "quantity": 1.0,
        "activity_id": ["", "", "", "act1", "", ""],
    }
)


def test_positives_with_their_weights_in_time_order(tmp_path: Path) -> None:
    EVENTS.to_parquet(tmp_path / "events.parquet")
    frame = load_interactions(tmp_path)
    assert list(frame.columns) == ["user_id", "item_id", "event_type", "timestamp", "weight"]
    # The impression and the campaign click (no item) are not positives; time order.
    assert frame["event_type"].astype(str).tolist() == ["add_to_cart", "view", "purchase", "click"]
    assert frame["weight"].tolist() == pytest.approx([0.7, 0.3, 1.0, 0.5])
    assert list(frame["user_id"].cat.categories) == ["a", "c"]
    assert str(frame["timestamp"].dt.tz) == "UTC"


def test_weights_and_types_follow_the_positive_events(tmp_path: Path) -> None:
    EVENTS.assign(order_id=["o1", "o2", "o3", "o3", "o4", "o5"]).to_parquet(
        tmp_path / "events.parquet"
    )
    frame = load_interactions(tmp_path, PositiveEvents(purchase=2.0, view=0.0, click=0.0))
    assert frame["event_type"].astype(str).tolist() == ["add_to_cart", "purchase"]
    assert frame["weight"].tolist() == pytest.approx([0.7, 2.0])
    assert frame["order_id"].astype(str).tolist() == ["o4", "o3"]


def test_positive_events_are_validated_by_name() -> None:
    assert PositiveEvents(view=0).weights() == {"purchase": 1.0, "add_to_cart": 0.7, "click": 0.5}
    with pytest.raises(ValueError, match=r"PositiveEvents.click: weight must be >= 0"):
        PositiveEvents(click=-1)
    with pytest.raises(ValueError, match="every weight is 0"):
        PositiveEvents(0, 0, 0, 0)


def test_a_missing_log_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(EventLogMissingError, match="scoring data generate"):
        load_interactions(tmp_path)


def test_a_log_without_positives_names_what_it_has(tmp_path: Path) -> None:
    EVENTS[EVENTS["event_type"] == "impression"].to_parquet(tmp_path / "events.parquet")
    with pytest.raises(EventLogMissingError, match="the log has impression"):
        load_interactions(tmp_path)
