"""Request-time (on-demand) features, computed from stored features and the request context."""

import pandas as pd
from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32, Int64

from activity import activity_stats
from defaults import view_defaults
from item import item_stats
from user import user_behavior, user_profile

request_context = RequestSource(
    name="request_context",
    schema=[Field(name="request_ts", dtype=Int64, description="request time, Unix seconds")],
)


@on_demand_feature_view(
    sources=[user_profile, user_behavior, item_stats, request_context],
    schema=[
        Field(name="category_match", dtype=Float32),
        Field(name="price_to_aov", dtype=Float32),
        Field(name="hour_of_day", dtype=Float32),
    ],
    mode="pandas",
    tags=view_defaults(category_match=0.0, price_to_aov=1.0, hour_of_day=12.0),
)
def item_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast runs this from its source text: keep imports inside and call no module helpers.
    import pandas as pd

    out = pd.DataFrame()
    out["category_match"] = (inputs["category"] == inputs["favorite_category"]).astype("float32")
    out["price_to_aov"] = (inputs["price"] / (inputs["avg_order_value"] + 1.0)).astype("float32")
    out["hour_of_day"] = ((inputs["request_ts"].astype("float64") // 3600) % 24).astype("float32")
    return out


@on_demand_feature_view(
    sources=[user_profile, activity_stats, request_context],
    schema=[
        Field(name="target_category_match", dtype=Float32),
        Field(name="hours_to_end", dtype=Float32),
        Field(name="hour_of_day", dtype=Float32),
    ],
    mode="pandas",
    tags=view_defaults(target_category_match=0.0, hours_to_end=0.0, hour_of_day=12.0),
)
def activity_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    out = pd.DataFrame()
    out["target_category_match"] = (
        inputs["target_category"] == inputs["favorite_category"]
    ).astype("float32")
    hours = (inputs["end_ts"] - inputs["request_ts"].astype("float64")) / 3600.0
    out["hours_to_end"] = np.clip(hours, 0.0, 24.0 * 60).astype("float32")
    out["hour_of_day"] = ((inputs["request_ts"].astype("float64") // 3600) % 24).astype("float32")
    return out
