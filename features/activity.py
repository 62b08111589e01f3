"""Activity (campaign / promotion / bundle) features."""

from datetime import timedelta

from feast import FeatureView, FileSource
from feast.types import Float32, Float64, Int64

from defaults import feature
from entities import activity

activity_stats_source = FileSource(
    name="activity_stats_source",
    path="data/activity_stats.parquet",
    timestamp_field="event_timestamp",
)

activity_stats = FeatureView(
    name="activity_stats",
    entities=[activity],
    ttl=timedelta(days=14),
    schema=[
        feature(
            "activity_type",
            Int64,
            default=0,
            description="0 discount, 1 flash sale, 2 coupon, 3 bundle",
        ),
        feature("discount_pct", Float32, default=0.0),
        feature("target_category", Int64, default=-1),
        feature("participants_7d", Float32, default=0.0),
        feature("end_ts", Float64, default=0.0, description="end time, Unix seconds"),
    ],
    source=activity_stats_source,
    online=True,
    tags={"owner": "marketing"},
)
