"""The event-log format every data source produces: synthetic, or a user's own import.

Events (required): one row per interaction.

| column | type | required | meaning |
|---|---|---|---|
| user_id | string | yes | the shopper |
| item_id | string | yes, unless activity_id is set | the product (SKU) |
| event_type | string | yes | impression, click, view, add_to_cart, purchase |
| timestamp | datetime / ISO-8601 / Unix seconds | yes | when it happened (UTC if naive) |
| price | float >= 0 | no | unit price paid (purchases) |
| quantity | int >= 1 | no | units (purchases; 1 if absent) |
| activity_id | string | no | the campaign of the event; with an empty item_id, an event on |
|  |  |  | the campaign itself (impression; click = participation) |

Optional attribute tables: items (item_id, category, brand, price, title, description, rating,
in_stock, created_at), users (user_id, segment, region, membership_level, age_bucket,
signup_at) and activities (activity_id, activity_type, discount_pct, start_at, end_at,
target_categories as "shoes|bags").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

EVENT_TYPES = ("impression", "click", "view", "add_to_cart", "purchase")
ACTIVITY_TYPES = ("discount", "flash_sale", "coupon", "bundle")

EVENT_COLUMNS = ("user_id", "item_id", "event_type", "timestamp")
OPTIONAL_EVENT_COLUMNS = ("price", "quantity", "activity_id")
# Extra columns the synthetic generator adds to impressions: the planted truth.
ORACLE_COLUMNS = ("p_click", "p_purchase")

ITEM_COLUMNS = ("item_id",)
OPTIONAL_ITEM_COLUMNS = (
    "category",
    "brand",
    "price",
    "title",
    "description",
    "rating",
    "in_stock",
    "created_at",
)
USER_COLUMNS = ("user_id",)
OPTIONAL_USER_COLUMNS = ("segment", "region", "membership_level", "age_bucket", "signup_at")
ACTIVITY_COLUMNS = ("activity_id", "activity_type", "start_at", "end_at")
OPTIONAL_ACTIVITY_COLUMNS = ("discount_pct", "target_categories")


@dataclass(frozen=True, slots=True)
class EventLog:
    """A validated event log and its optional attribute tables.

    Attributes:
        events: user_id, item_id ("" when none), event_type, timestamp (UTC), price, quantity,
            activity_id ("" when none), and, for synthetic data, the oracle columns.
        items / users / activities: attribute tables (possibly empty, with their columns).
    """

    events: pd.DataFrame
    items: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(ITEM_COLUMNS)))
    users: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(USER_COLUMNS)))
    activities: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(ACTIVITY_COLUMNS))
    )

    @property
    def end(self) -> pd.Timestamp:
        """The newest event time."""
        return pd.Timestamp(self.events["timestamp"].max())

    def append(self, other: EventLog) -> EventLog:
        """This log followed by newer events (attribute tables: newest row per id wins)."""

        def merge(a: pd.DataFrame, b: pd.DataFrame, key: str) -> pd.DataFrame:
            if b.empty:
                return a
            both = pd.concat([a, b], ignore_index=True)
            return both.drop_duplicates(key, keep="last", ignore_index=True)

        events = pd.concat([self.events, other.events], ignore_index=True)
        return EventLog(
            events.sort_values("timestamp", kind="stable", ignore_index=True),
            merge(self.items, other.items, "item_id"),
            merge(self.users, other.users, "user_id"),
            merge(self.activities, other.activities, "activity_id"),
        )
