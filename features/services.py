"""Feature services: one per model target, versioned. Each is the model's feature contract.

A projection (`view[[...]]`) picks the features a model reads; the rest of a view (sign-up and
launch times, the affinity vector) feeds the request-time features only.
"""

from feast import FeatureService

from activity import activity_stats
from collaborative import item_collaborative_features
from item import item_embedding, item_stats
from on_demand import activity_request_features, item_request_features
from user import user_affinity, user_behavior, user_profile

_user = [
    user_profile[["segment", "region", "membership_level", "age_bucket"]],
    user_behavior,
    user_affinity[
        ["top_category", "top_category_share", "days_since_last_view", "days_since_last_purchase"]
    ],
]

item_ranker_v1 = FeatureService(
    name="item_ranker_v1",
    features=[
        *_user,
        item_stats[
            [
                *("category", "brand", "price", "rating", "in_stock", "purchases_total"),
                *("impressions_7d", "clicks_7d", "ctr_7d", "ctr_30d", "sales_7d", "sales_30d"),
                *("conversion_30d", "cart_rate_30d"),
            ]
        ],
        item_embedding,
        item_request_features,
        item_collaborative_features,
    ],
    description="Features of the item (product) ranking model.",
    tags={"target": "item_ranker"},
)

activity_ranker_v1 = FeatureService(
    name="activity_ranker_v1",
    features=[
        *_user,
        activity_stats[
            [
                *("activity_type", "discount_pct", "target_category", "target_category_2"),
                *("end_ts", "impressions_1d", "participants_1d", "participants_7d"),
                *("participation_rate_7d", "impressions_total", "participation_rate_total"),
            ]
        ],
        activity_request_features,
    ],
    description="Features of the activity (campaign/promotion) ranking model.",
    tags={"target": "activity_ranker"},
)
