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
| order_id | string | no | the basket: the purchases (and add-to-carts) of one order; one |
|  |  |  | order belongs to one user |
| bundle_id | string | no | with an empty item_id (and activity_id), an event on the bundle |
|  |  |  | itself (impression, click, purchase); names a row of the bundles table |

Optional attribute tables: items (item_id, category, brand, price, title, description, rating,
in_stock, created_at), users (user_id, segment, region, membership_level, age_bucket,
signup_at), activities (activity_id, activity_type, discount_pct, start_at, end_at,
target_categories as "shoes|bags") and bundles (bundle_id, items as "i1|i2|i3": at least two
distinct item ids, bundle_price: the sum of its items' prices when missing, name, start_at,
end_at).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

EVENT_TYPES = ("impression", "click", "view", "add_to_cart", "purchase")
ACTIVITY_TYPES = ("discount", "flash_sale", "coupon", "bundle")

EVENT_COLUMNS = ("user_id", "item_id", "event_type", "timestamp")
OPTIONAL_EVENT_COLUMNS = ("price", "quantity", "activity_id", "order_id", "bundle_id")
# Id columns where "" means none (a log without the column has none).
EVENT_ID_COLUMNS = ("activity_id", "order_id", "bundle_id")
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
BUNDLE_COLUMNS = ("bundle_id", "items")
OPTIONAL_BUNDLE_COLUMNS = ("bundle_price", "name", "start_at", "end_at")
BUNDLE_ITEM_SEPARATOR = "|"


def empty_bundles() -> pd.DataFrame:
    """A bundles table without rows, with its columns and their types."""
    return pd.DataFrame(
        {
            "bundle_id": pd.Series(dtype=object),
            "items": pd.Series(dtype=object),
            "bundle_price": pd.Series(dtype="float64"),
            "name": pd.Series(dtype=object),
            "start_at": pd.Series(dtype="datetime64[ns, UTC]"),
            "end_at": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )


def bundle_items(bundles: pd.DataFrame) -> pd.Series:
    """Each bundle's item ids as a list (the `items` column split at "|")."""
    return bundles["items"].fillna("").astype(str).str.split(BUNDLE_ITEM_SEPARATOR)


@dataclass(frozen=True, slots=True)
class EventLog:
    """A validated event log and its optional attribute tables.

    Attributes:
        events: user_id, item_id ("" when none), event_type, timestamp (UTC), price, quantity,
            activity_id ("" when none), bundle_id ("" when none; always there for an import
            and for synthetic data), order_id ("" when none; only when the log has one), and,
            for synthetic data, the oracle columns.
        items / users / activities: attribute tables (possibly empty, with their columns).
        bundles: bundle_id, items ("i1|i2|i3"), bundle_price, name, start_at, end_at (UTC;
            NaT when open); possibly empty.
    """

    events: pd.DataFrame
    items: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(ITEM_COLUMNS)))
    users: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(USER_COLUMNS)))
    activities: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(ACTIVITY_COLUMNS))
    )
    bundles: pd.DataFrame = field(default_factory=empty_bundles)

    @property
    def end(self) -> pd.Timestamp:
        """The newest event time."""
        return pd.Timestamp(self.events["timestamp"].max())

    def append(self, other: EventLog) -> EventLog:
        """This log followed by newer events (attribute tables: newest row per id wins)."""

        def merge(a: pd.DataFrame, b: pd.DataFrame, key: str) -> pd.DataFrame:
            if b.empty:
                return a
            if a.empty:
                return b
            both = pd.concat([a, b], ignore_index=True)
            return both.drop_duplicates(key, keep="last", ignore_index=True)

        events = pd.concat([self.events, other.events], ignore_index=True)
        # An id column only one side has: "" (none) on the other side's rows.
        for col in EVENT_ID_COLUMNS:
            if col in events:
                events[col] = events[col].fillna("")
        return EventLog(
            events.sort_values("timestamp", kind="stable", ignore_index=True),
            merge(self.items, other.items, "item_id"),
            merge(self.users, other.users, "user_id"),
            merge(self.activities, other.activities, "activity_id"),
            merge(self.bundles, other.bundles, "bundle_id"),
        )
