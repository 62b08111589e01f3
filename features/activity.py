"""Activity (campaign: discount, flash sale, coupon, bundle) features."""

from datetime import timedelta

from feast.types import Float32, Float64, Int64

from defaults import feature, table_view
from entities import activity

# Campaign definition and participation: one row when announced (a day before the start),
# then one per hour until a day after the end, then one per midnight.
_stats = [
    feature(
        "activity_type",
        Int64,
        default=-1,
        description="0 discount, 1 flash sale, 2 coupon, 3 bundle",
    ),
    feature("discount_pct", Float32, default=0.0),
    feature("target_category", Int64, default=-1),
    feature("target_category_2", Int64, default=-1, description="-1: a single target"),
    feature("start_ts", Float64, default=0.0, description="Unix seconds"),
    feature("end_ts", Float64, default=0.0, description="Unix seconds"),
    feature("impressions_1d", Float32, default=0.0),
    feature("participants_1d", Float32, default=0.0),
    feature("participants_7d", Float32, default=0.0),
    feature("participation_rate_7d", Float32, default=0.05),
    feature("impressions_total", Float32, default=0.0, description="since the start"),
    feature(
        "participation_rate_total",
        Float32,
        default=0.05,
        description="since the start, smoothed towards the global CTR",
    ),
]
activity_stats = table_view(
    "activity_stats", activity, owner="marketing", ttl=timedelta(days=2), schema=_stats
)
