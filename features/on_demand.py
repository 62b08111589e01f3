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
from feast.types import Float32, Int64

from activity import activity_stats
from defaults import view_defaults
from item import item_stats
from user import user_affinity, user_behavior, user_profile

request_context = RequestSource(
    name="request_context",
    schema=[Field(name="request_ts", dtype=Int64, description="request time, Unix seconds")],
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
    schema=[
        Field(name="user_category_affinity", dtype=Float32),
        Field(name="category_view_affinity", dtype=Float32),
        Field(name="category_impression_affinity", dtype=Float32),
        Field(name="is_top_category", dtype=Float32),
        Field(name="price_to_aov", dtype=Float32),
        Field(name="item_age_days", dtype=Float32),
        Field(name="tenure_days", dtype=Float32),
        Field(name="hour_of_day", dtype=Float32),
        Field(name="hour_sin", dtype=Float32),
        Field(name="hour_cos", dtype=Float32),
        Field(name="day_of_week", dtype=Float32),
    ],
    mode="pandas",
    tags=view_defaults(
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
    ),
)
def item_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast runs this from its source text: keep imports inside and call no module helpers.
    import numpy as np
    import pandas as pd

    def num(name: str) -> np.ndarray:
        return pd.to_numeric(inputs[name], errors="coerce").to_numpy(dtype="float64")

    def lift(prefix: str, slot: np.ndarray) -> np.ndarray:
        counts = np.stack([num(f"{prefix}_{s:02d}") for s in range(16)], axis=1)
        share = (counts[rows, slot] + 0.25) / (counts.sum(axis=1) + 16 * 0.25)
        return np.log(16 * share)

    ts = num("request_ts")
    rows = np.arange(len(inputs))
    category = num("category")
    slot = np.where(category >= 0, category % 16, 0).astype("int64")
    table = np.stack([num(f"affinity_{s:02d}") for s in range(16)], axis=1)
    affinity = np.where(category >= 0, table[rows, slot], np.nan)
    top = num("top_category")
    hour = (ts // 3600) % 24
    out = pd.DataFrame(index=inputs.index)
    out["user_category_affinity"] = affinity.astype("float32")
    for name, prefix in (("view", "views_90d"), ("impression", "impressions_90d")):
        value = np.where(category >= 0, lift(prefix, slot), np.nan)
        out[f"category_{name}_affinity"] = value.astype("float32")
    known = (category == category) & (top == top) & (top >= 0)
    out["is_top_category"] = np.where(known, category == top, np.nan).astype("float32")
    out["price_to_aov"] = (num("price") / num("avg_order_value_30d")).astype("float32")
    out["item_age_days"] = ((ts - num("launch_ts")) / 86400.0).astype("float32")
    out["tenure_days"] = ((ts - num("signup_ts")) / 86400.0).astype("float32")
    out["hour_of_day"] = hour.astype("float32")
    # The hour on a circle: 23:00 is next to 00:00.
    out["hour_sin"] = np.sin(2 * np.pi * hour / 24).astype("float32")
    out["hour_cos"] = np.cos(2 * np.pi * hour / 24).astype("float32")
    out["day_of_week"] = ((ts // 86400 + 3) % 7).astype("float32")
    return out


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
    schema=[
        Field(name="target_affinity", dtype=Float32),
        Field(name="target_view_affinity", dtype=Float32),
        Field(name="target_impression_affinity", dtype=Float32),
        Field(name="hours_to_end", dtype=Float32),
        Field(name="ending_soon", dtype=Float32),
        Field(name="hours_since_start", dtype=Float32),
        Field(name="tenure_days", dtype=Float32),
        Field(name="hour_of_day", dtype=Float32),
        Field(name="day_of_week", dtype=Float32),
    ],
    mode="pandas",
    tags=view_defaults(
        target_affinity=1.0 / 16,
        target_view_affinity=0.0,
        target_impression_affinity=0.0,
        hours_to_end=72.0,
        ending_soon=0.0,
        hours_since_start=72.0,
        tenure_days=0.0,
        hour_of_day=12.0,
        day_of_week=3.0,
    ),
)
def activity_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    def num(name: str) -> np.ndarray:
        return pd.to_numeric(inputs[name], errors="coerce").to_numpy(dtype="float64")

    ts = num("request_ts")
    first, second = num("target_category"), num("target_category_2")
    table = np.stack([num(f"affinity_{s:02d}") for s in range(16)], axis=1)
    rows = np.arange(len(inputs))

    def share(category: np.ndarray) -> np.ndarray:
        slot = np.where(category >= 0, category % 16, 0).astype("int64")
        return np.where(category >= 0, table[rows, slot], np.nan)

    def lift(prefix: str, category: np.ndarray) -> np.ndarray:
        slot = np.where(category >= 0, category % 16, 0).astype("int64")
        counts = np.stack([num(f"{prefix}_{s:02d}") for s in range(16)], axis=1)
        value = (counts[rows, slot] + 0.25) / (counts.sum(axis=1) + 16 * 0.25)
        return np.where(category >= 0, np.log(16 * value), np.nan)

    # The better of the two targets; a missing second target does not hide the first.
    affinity = np.fmax(share(first), share(second))
    out = pd.DataFrame(index=inputs.index)
    out["target_affinity"] = affinity.astype("float32")
    for name, prefix in (("view", "views_90d"), ("impression", "impressions_90d")):
        value = np.fmax(lift(prefix, first), lift(prefix, second))
        out[f"target_{name}_affinity"] = value.astype("float32")
    hours_to_end = (num("end_ts") - ts) / 3600.0
    out["hours_to_end"] = np.clip(hours_to_end, -24.0 * 7, 24.0 * 60).astype("float32")
    # The storefront's "ends soon" badge (the last two days): a step a network learns slowly
    # from a linear hours scale.
    ending = (hours_to_end >= 0) & (hours_to_end < 48.0)
    out["ending_soon"] = np.where(hours_to_end == hours_to_end, ending, np.nan).astype("float32")
    out["hours_since_start"] = np.clip(
        (ts - num("start_ts")) / 3600.0, -24.0 * 7, 24.0 * 60
    ).astype("float32")
    out["tenure_days"] = ((ts - num("signup_ts")) / 86400.0).astype("float32")
    out["hour_of_day"] = ((ts // 3600) % 24).astype("float32")
    out["day_of_week"] = ((ts // 86400 + 3) % 7).astype("float32")
    return out
