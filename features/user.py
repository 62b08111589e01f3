"""User (shopper) features: profile, behaviour windows, category affinity and recency."""

from datetime import timedelta
from functools import partial

from feast.types import Float32, Float64, Int64

from defaults import feature, table_view
from entities import user

user_view = partial(table_view, entity=user, owner="personalization")

# Daily CRM export: a profile appears at the first midnight after sign-up.
_profile = [
    feature("segment", Int64, default=-1, description="code of new/casual/regular/loyal/vip"),
    feature("region", Int64, default=-1, description="region code (data/vocab.json)"),
    feature("membership_level", Int64, default=0, description="0 none, 1 silver, 2 gold"),
    feature("age_bucket", Int64, default=-1, description="0: <25 ... 4: 55+"),
    feature("signup_ts", Float64, default=0.0, description="sign-up, Unix seconds"),
]
user_profile = user_view("user_profile", ttl=timedelta(days=365), schema=_profile)

# Daily job over the event log, active users (any event in 30 days) only; windows [T-w, T).
_windows = [
    feature(f"{name}_{w}", Float32, default=0.0)
    for name in ("views", "clicks", "carts", "purchases", "spend")
    for w in ("1d", "7d", "30d")
]
_behavior = [
    *_windows,
    feature("ctr_30d", Float32, default=0.05, description="smoothed towards the global CTR"),
    feature("avg_order_value_30d", Float32, default=50.0, description="spend / purchases"),
]
user_behavior = user_view("user_behavior", ttl=timedelta(days=2), schema=_behavior)

_affinity = [
    # Share of 30-day engagement per category slot (category code % 16); scalar columns,
    # not a vector, so the offline point-in-time join stays fast.
    *[feature(f"affinity_{slot:02d}", Float32, default=1.0 / 16) for slot in range(16)],
    # Product views and item impressions per category slot over 90 days: the evidence
    # behind a smoothed preference estimate (on_demand.py), longer than the 30-day share.
    *[feature(f"views_90d_{slot:02d}", Float32, default=0.0) for slot in range(16)],
    *[feature(f"impressions_90d_{slot:02d}", Float32, default=0.0) for slot in range(16)],
    feature("top_category", Int64, default=-1),
    feature("top_category_share", Float32, default=0.0),
    feature("days_since_last_view", Float32, default=30.0),
    feature("days_since_last_purchase", Float32, default=90.0),
]
user_affinity = user_view("user_affinity", ttl=timedelta(days=2), schema=_affinity)
