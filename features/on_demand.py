"""Request-time (on-demand) features, computed from stored features and the request context.

A request-time feature is missing (NaN: its default and missing indicator apply) when an input
it needs is missing, the same in training (Feast's point-in-time join) and in serving.
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
        user_affinity[[*(f"affinity_{s:02d}" for s in range(16)), "top_category"]],
        item_stats[["category", "price", "launch_ts"]],
        request_context,
    ],
    schema=[
        Field(name="user_category_affinity", dtype=Float32),
        Field(name="is_top_category", dtype=Float32),
        Field(name="price_to_aov", dtype=Float32),
        Field(name="item_age_days", dtype=Float32),
        Field(name="tenure_days", dtype=Float32),
        Field(name="hour_of_day", dtype=Float32),
        Field(name="day_of_week", dtype=Float32),
    ],
    mode="pandas",
    tags=view_defaults(
        user_category_affinity=1.0 / 16,
        is_top_category=0.0,
        price_to_aov=1.0,
        item_age_days=30.0,
        tenure_days=0.0,
        hour_of_day=12.0,
        day_of_week=3.0,
    ),
)
def item_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast runs this from its source text: keep imports inside and call no module helpers.
    import numpy as np
    import pandas as pd

    def num(name: str) -> np.ndarray:
        return pd.to_numeric(inputs[name], errors="coerce").to_numpy(dtype="float64")

    ts = num("request_ts")
    category = num("category")
    slot = np.where(category >= 0, category % 16, 0).astype("int64")
    table = np.stack([num(f"affinity_{s:02d}") for s in range(16)], axis=1)
    affinity = np.where(category >= 0, table[np.arange(len(inputs)), slot], np.nan)
    top = num("top_category")
    out = pd.DataFrame(index=inputs.index)
    out["user_category_affinity"] = affinity.astype("float32")
    known = (category == category) & (top == top) & (top >= 0)
    out["is_top_category"] = np.where(known, category == top, np.nan).astype("float32")
    out["price_to_aov"] = (num("price") / num("avg_order_value_30d")).astype("float32")
    out["item_age_days"] = ((ts - num("launch_ts")) / 86400.0).astype("float32")
    out["tenure_days"] = ((ts - num("signup_ts")) / 86400.0).astype("float32")
    out["hour_of_day"] = ((ts // 3600) % 24).astype("float32")
    out["day_of_week"] = ((ts // 86400 + 3) % 7).astype("float32")
    return out


@on_demand_feature_view(
    sources=[
        user_profile[["signup_ts"]],
        user_affinity[[f"affinity_{s:02d}" for s in range(16)]],
        activity_stats[["target_category", "target_category_2", "start_ts", "end_ts"]],
        request_context,
    ],
    schema=[
        Field(name="target_affinity", dtype=Float32),
        Field(name="hours_to_end", dtype=Float32),
        Field(name="hours_since_start", dtype=Float32),
        Field(name="tenure_days", dtype=Float32),
        Field(name="hour_of_day", dtype=Float32),
        Field(name="day_of_week", dtype=Float32),
    ],
    mode="pandas",
    tags=view_defaults(
        target_affinity=1.0 / 16,
        hours_to_end=72.0,
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

    # The better of the two targets; a missing second target does not hide the first.
    affinity = np.fmax(share(first), share(second))
    out = pd.DataFrame(index=inputs.index)
    out["target_affinity"] = affinity.astype("float32")
    out["hours_to_end"] = np.clip((num("end_ts") - ts) / 3600.0, -24.0 * 7, 24.0 * 60).astype(
        "float32"
    )
    out["hours_since_start"] = np.clip(
        (ts - num("start_ts")) / 3600.0, -24.0 * 7, 24.0 * 60
    ).astype("float32")
    out["tenure_days"] = ((ts - num("signup_ts")) / 86400.0).astype("float32")
    out["hour_of_day"] = ((ts // 3600) % 24).astype("float32")
    out["day_of_week"] = ((ts // 86400 + 3) % 7).astype("float32")
    return out
