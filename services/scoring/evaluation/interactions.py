"""The positive interactions of a user's event log: who did what with which item, and its weight.

The feature build keeps the validated event log as `data/events.parquet` (scoring.datagen.dataset);
evaluation and implicit-feedback training read their positives from it. Which event types count
as positives, and how much, is a `PositiveEvents` (no torch needed to import this module).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

EVENTS_FILE = "events.parquet"
INTERACTION_COLUMNS = ("user_id", "item_id", "event_type", "timestamp", "weight")


class EventLogMissingError(FileNotFoundError):
    """No usable event log: the message says what is missing and how to get it."""


@dataclass(frozen=True, slots=True)
class PositiveEvents:
    """Event types that count as positive interactions, with their weights (0 = not a positive).

    Impressions are never positives: being shown an item says nothing about wanting it.
    """

    purchase: float = 1.0
    add_to_cart: float = 0.7
    click: float = 0.5
    view: float = 0.3

    def __post_init__(self) -> None:
        for name, weight in asdict(self).items():
            if not (weight >= 0 and np.isfinite(weight)):
                raise ValueError(f"PositiveEvents.{name}: weight must be >= 0, got {weight!r}")
        if not self.weights():
            raise ValueError("PositiveEvents: every weight is 0, so nothing counts as a positive")

    def weights(self) -> dict[str, float]:
        """Event type -> weight, for the event types that count (weight > 0)."""
        return {name: float(w) for name, w in asdict(self).items() if w > 0}


def sorted_categorical(values: pd.Series) -> pd.Series:
    """`values` as a categorical of strings whose categories are sorted and all used, so that
    codes follow the ids' order whatever order the rows came in."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        text = values.where(values.notna(), "").astype(str)
        return text.astype("category")  # categories come out sorted
    values = values.cat.remove_unused_categories()
    cats = values.cat.categories
    if not cats.is_monotonic_increasing or cats.dtype != object:
        values = values.cat.rename_categories(cats.astype(str))
        values = values.cat.reorder_categories(values.cat.categories.sort_values())
    return values


def latest_distinct(
    basket: np.ndarray, item: np.ndarray, n_items: int, per_basket: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each basket's `per_basket` latest distinct items, as (basket, item) code pairs sorted
    by basket (latest occurrence order within one); `basket` and `item` are in log order."""
    keys = basket * np.int64(n_items) + item
    last = len(keys) - 1 - np.unique(keys[::-1], return_index=True)[1]
    last.sort()
    b, i = basket[last], item[last]
    order = np.argsort(b, kind="stable")
    b, i = b[order], i[order]
    ends = np.searchsorted(b, b, side="right")
    keep = ends - np.arange(len(b)) <= per_basket
    return b[keep], i[keep]


def load_interactions(data_dir: Path, positives: PositiveEvents | None = None) -> pd.DataFrame:
    """The positive interactions of `data_dir/events.parquet`, in log order (time, then file order).

    Args:
        data_dir: the feature repo's data folder (features/data).
        positives: which event types count, and their weights; the defaults when None.

    Returns:
        user_id, item_id, event_type (categoricals), timestamp (UTC), weight (float32), and
        order_id (categorical) when the log has one; campaign events without an item are left
        out. The index is 0..n-1, the log order, which breaks ties between equal timestamps.

    Raises:
        EventLogMissingError: no events.parquet, or no positive event with an item in it.
    """
    positives = positives or PositiveEvents()
    path = data_dir / EVENTS_FILE
    if not path.exists():
        raise EventLogMissingError(
            f"no event log at {path}: build one with `scoring data generate` or "
            "`scoring data import <events>` (data built before the log was kept needs a rebuild)"
        )
    weights = positives.weights()
    names = set(pq.read_schema(path).names)
    missing = [c for c in INTERACTION_COLUMNS[:4] if c not in names]
    if missing:
        raise EventLogMissingError(f"{path}: missing column(s) {missing}")
    columns = [*INTERACTION_COLUMNS[:4], *(["order_id"] if "order_id" in names else [])]
    dictionary = [c for c in columns if c != "timestamp"]
    table = pq.read_table(
        path,
        columns=columns,
        filters=[("event_type", "in", sorted(weights))],
        read_dictionary=dictionary,
    )
    # One dictionary for the whole column (row groups may each carry their own).
    table = table.unify_dictionaries()
    frame = table.to_pandas(types_mapper=None, self_destruct=True)
    del table
    frame = frame[frame["item_id"].notna() & (frame["item_id"] != "")]
    if frame.empty:
        found = pq.read_table(path, columns=["event_type"])["event_type"]
        kinds = sorted(str(k) for k in pa.compute.unique(found).to_pylist())
        raise EventLogMissingError(
            f"{path}: no positive event with an item_id; positives are "
            f"{', '.join(sorted(weights))} and the log has {', '.join(kinds) or 'no events'}"
        )
    if not frame["timestamp"].is_monotonic_increasing:
        frame = frame.sort_values("timestamp", kind="stable")
    frame = frame.reset_index(drop=True)
    for col in dictionary:
        frame[col] = sorted_categorical(frame[col])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    weight_of = pd.Series(weights, dtype="float32")
    frame["weight"] = weight_of.reindex(frame["event_type"].cat.categories).to_numpy()[
        frame["event_type"].cat.codes.to_numpy()
    ]
    return frame[[*INTERACTION_COLUMNS, *(["order_id"] if "order_id" in frame else [])]]


__all__ = [
    "EVENTS_FILE",
    "EventLogMissingError",
    "PositiveEvents",
    "load_interactions",
    "sorted_categorical",
]
