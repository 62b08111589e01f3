"""Request-time (on-demand) features, computed from stored features and the request context.

A request-time feature is missing (NaN: its default and missing indicator apply) when an input
it needs is missing, the same in training (Feast's point-in-time join) and in serving.

Category preference (`*_view_affinity`, `*_impression_affinity`): the log-lift of a category
slot's share of the user's 90-day product views (or item impressions) over a uniform share,
with a small Dirichlet prior (0.25 per slot) so that thin histories stay near 0:
log(16 * (n_slot + 0.25) / (n_all + 16 * 0.25)). A log scale, since click odds scale with the
preference share, not with its difference.
"""

import pandas as pd
from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Int64

from activity import activity_stats
from defaults import array_inputs, float_outputs
from item import item_stats
from user import user_affinity, user_behavior, user_profile

request_context = RequestSource(
    name="request_context",
    schema=[Field(name="request_ts", dtype=Int64, description="request time, Unix seconds")],
)


_item_request_features_schema, _item_request_features_defaults = float_outputs(
    user_category_affinity=1.0 / 16,
    category_view_affinity=0.0,
    category_impression_affinity=0.0,
    is_top_category=0.0,
    price_to_aov=1.0,
    item_age_days=30.0,
    tenure_days=0.0,
    hour_of_day=12.0,
    hour_sin=0.0,
    hour_cos=-1.0,
    day_of_week=3.0,
)


@on_demand_feature_view(
    sources=[
        user_profile[["signup_ts"]],
        user_behavior[["avg_order_value_30d"]],
        user_affinity[
            [
                *(f"affinity_{s:02d}" for s in range(16)),
                *(f"views_90d_{s:02d}" for s in range(16)),
                *(f"impressions_90d_{s:02d}" for s in range(16)),
                "top_category",
            ]
        ],
        item_stats[["category", "price", "launch_ts"]],
        request_context,
    ],
    schema=_item_request_features_schema,
    mode="pandas",
    tags=array_inputs() | _item_request_features_defaults,
)
def item_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast checks these annotations; the gateway also passes a dict of columns (see below).
    # Feast runs this from its source text: keep imports inside and call no module helpers.
    # Inputs are read as one float block and the output is built in one go. Feast passes a
    # DataFrame (training, the SDK) and gets one back; the gateway passes float64 columns by
    # name and gets float32 columns back (the view's `inputs: arrays` tag): the same arithmetic
    # on the same block, without pandas on the request path.
    import numpy as np
    import pandas as pd

    # One float block for every input, sliced into 7 scalars and 3 per-category tables of 16
    # slots.
    scalars = ["request_ts", "category", "top_category", "price", "avg_order_value_30d"]
    tables = ["affinity", "views_90d", "impressions_90d"]
    names = [
        *scalars, "launch_ts", "signup_ts", *(f"{t}_{s:02d}" for t in tables for s in range(16))
    ]  # fmt: skip
    if isinstance(inputs, pd.DataFrame):
        frame = inputs[names]
        try:
            x = frame.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):  # e.g. pd.NA in an object column
            x = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    else:
        x = np.array([inputs[name] for name in names], dtype="float64").T
    ts, category, top, price, aov, launch, signup = x[:, :7].T
    per_slot = {t: x[:, 7 + 16 * k : 23 + 16 * k] for k, t in enumerate(tables)}
    rows = np.arange(len(x))
    slot = np.where(category >= 0, category % 16, 0).astype("int64")

    def lift(prefix: str) -> np.ndarray:
        counts = per_slot[prefix]
        share = (counts[rows, slot] + 0.25) / (counts.sum(axis=1) + 16 * 0.25)
        return np.where(category >= 0, np.log(16 * share), np.nan)

    affinity = per_slot["affinity"]
    known = (category == category) & (top == top) & (top >= 0)
    hour = (ts // 3600) % 24
    out = {
        "user_category_affinity": np.where(category >= 0, affinity[rows, slot], np.nan),
        "category_view_affinity": lift("views_90d"),
        "category_impression_affinity": lift("impressions_90d"),
        "is_top_category": np.where(known, category == top, np.nan),
        # A spend of 0 (free orders) says nothing about price: missing, not a division by 0.
        "price_to_aov": price / np.where(aov > 0, aov, np.nan),
        "item_age_days": (ts - launch) / 86400.0,
        "tenure_days": (ts - signup) / 86400.0,
        "hour_of_day": hour,
        # The hour on a circle: 23:00 is next to 00:00.
        "hour_sin": np.sin(2 * np.pi * hour / 24),
        "hour_cos": np.cos(2 * np.pi * hour / 24),
        "day_of_week": (ts // 86400 + 3) % 7,
    }
    columns = {k: v.astype("float32") for k, v in out.items()}
    if isinstance(inputs, pd.DataFrame):
        return pd.DataFrame(columns, index=inputs.index)
    return columns


_activity_request_features_schema, _activity_request_features_defaults = float_outputs(
    target_affinity=1.0 / 16,
    target_view_affinity=0.0,
    target_impression_affinity=0.0,
    hours_to_end=72.0,
    ending_soon=0.0,
    hours_since_start=72.0,
    tenure_days=0.0,
    hour_of_day=12.0,
    day_of_week=3.0,
)


@on_demand_feature_view(
    sources=[
        user_profile[["signup_ts"]],
        user_affinity[
            [
                *(f"affinity_{s:02d}" for s in range(16)),
                *(f"views_90d_{s:02d}" for s in range(16)),
                *(f"impressions_90d_{s:02d}" for s in range(16)),
            ]
        ],
        activity_stats[["target_category", "target_category_2", "start_ts", "end_ts"]],
        request_context,
    ],
    schema=_activity_request_features_schema,
    mode="pandas",
    tags=array_inputs() | _activity_request_features_defaults,
)
def activity_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast checks these annotations; the gateway also passes a dict of columns (see below).
    # Feast runs this from its source text: the block read is repeated here, not shared. A
    # DataFrame in, a DataFrame out; float64 columns in (the gateway), float32 columns out.
    import numpy as np
    import pandas as pd

    scalars = ["request_ts", "target_category", "target_category_2", "start_ts", "end_ts"]
    tables = ["affinity", "views_90d", "impressions_90d"]
    names = [*scalars, "signup_ts", *(f"{t}_{s:02d}" for t in tables for s in range(16))]
    if isinstance(inputs, pd.DataFrame):
        frame = inputs[names]
        try:
            x = frame.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):  # e.g. pd.NA in an object column
            x = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    else:
        x = np.array([inputs[name] for name in names], dtype="float64").T
    ts, first, second, start, end, signup = x[:, :6].T
    per_slot = {t: x[:, 6 + 16 * k : 22 + 16 * k] for k, t in enumerate(tables)}
    table = per_slot["affinity"]
    rows = np.arange(len(x))

    def slot_of(category: np.ndarray) -> np.ndarray:
        return np.where(category >= 0, category % 16, 0).astype("int64")

    def share(category: np.ndarray) -> np.ndarray:
        return np.where(category >= 0, table[rows, slot_of(category)], np.nan)

    def lift(prefix: str, category: np.ndarray) -> np.ndarray:
        counts = per_slot[prefix]
        value = (counts[rows, slot_of(category)] + 0.25) / (counts.sum(axis=1) + 16 * 0.25)
        return np.where(category >= 0, np.log(16 * value), np.nan)

    # The better of the two targets; a missing second target does not hide the first.
    hours_to_end = (end - ts) / 3600.0
    # The storefront's "ends soon" badge (the last two days): a step a network learns slowly
    # from a linear hours scale.
    ending = (hours_to_end >= 0) & (hours_to_end < 48.0)
    out = {
        "target_affinity": np.fmax(share(first), share(second)),
        "target_view_affinity": np.fmax(lift("views_90d", first), lift("views_90d", second)),
        "target_impression_affinity": np.fmax(
            lift("impressions_90d", first), lift("impressions_90d", second)
        ),
        "hours_to_end": np.clip(hours_to_end, -24.0 * 7, 24.0 * 60),
        "ending_soon": np.where(hours_to_end == hours_to_end, ending, np.nan),
        "hours_since_start": np.clip((ts - start) / 3600.0, -24.0 * 7, 24.0 * 60),
        "tenure_days": (ts - signup) / 86400.0,
        "hour_of_day": (ts // 3600) % 24,
        "day_of_week": (ts // 86400 + 3) % 7,
    }
    columns = {k: v.astype("float32") for k, v in out.items()}
    if isinstance(inputs, pd.DataFrame):
        return pd.DataFrame(columns, index=inputs.index)
    return columns
