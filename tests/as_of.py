"""An independent as-of join, to check Feast's point-in-time joins against."""

from __future__ import annotations

import pandas as pd


def as_of(
    rows: pd.DataFrame, snapshots: pd.DataFrame, key: str, column: str, ttl: pd.Timedelta
) -> pd.Series:
    """Per row of `rows`, `column` of the latest snapshot of its `key` at or before the row's
    event time; NaN when there is none or it is older than the view's `ttl`."""
    left = rows[[key, "event_timestamp"]].reset_index()
    right = snapshots[[key, "event_timestamp", column]].copy()
    for frame in (left, right):
        frame["event_timestamp"] = frame["event_timestamp"].astype("datetime64[ns, UTC]")
    joined = pd.merge_asof(
        left.sort_values("event_timestamp"),
        right.sort_values("event_timestamp"),
        on="event_timestamp",
        by=key,
        direction="backward",
        tolerance=ttl,
    )
    return joined.set_index("index").sort_index()[column]
