"""User features: profile and behaviour aggregates."""

from datetime import timedelta

from feast import FeatureView, FileSource
from feast.types import Float32, Int64

from defaults import feature
from entities import user

user_profile_source = FileSource(
    name="user_profile_source",
    path="data/user_profile.parquet",
    timestamp_field="event_timestamp",
)

user_behavior_source = FileSource(
    name="user_behavior_source",
    path="data/user_behavior.parquet",
    timestamp_field="event_timestamp",
)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=365),
    schema=[
        feature("age_bucket", Int64, default=2, description="0: <25 ... 4: 55+"),
        feature("membership_level", Int64, default=0, description="0 none, 1 silver, 2 gold"),
        feature("tenure_days", Float32, default=0.0),
        feature("favorite_category", Int64, default=-1, description="-1 unknown"),
    ],
    source=user_profile_source,
    online=True,
    tags={"owner": "personalization"},
)

user_behavior = FeatureView(
    name="user_behavior",
    entities=[user],
    ttl=timedelta(days=14),
    schema=[
        feature("views_7d", Float32, default=0.0),
        feature("clicks_7d", Float32, default=0.0),
        feature("purchases_30d", Float32, default=0.0),
        feature("spend_30d", Float32, default=0.0),
        feature("avg_order_value", Float32, default=0.0),
        feature("ctr_30d", Float32, default=0.05, description="defaults to the global CTR"),
    ],
    source=user_behavior_source,
    online=True,
    tags={"owner": "personalization"},
)
