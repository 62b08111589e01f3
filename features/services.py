"""Feature services: one per model target, versioned. Each is the model's feature contract.

A projection (`view[[...]]`) picks the features a model reads; the rest of a view (sign-up and
launch times, the affinity vector) feeds the request-time features only.
"""

from feast import FeatureService

from activity import activity_stats
from basket import basket_features, item_copurchase
from bundle import bundle_request_features, bundle_stats
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

_item = [
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
]

item_ranker_v1 = FeatureService(
    name="item_ranker_v1",
    features=[*_user, *_item],
    description="Features of the item (product) ranking model.",
    tags={"target": "item_ranker"},
)

# The item ranker's features and the candidate against the request's cart.
basket_completer_v1 = FeatureService(
    name="basket_completer_v1",
    features=[*_user, *_item, basket_features],
    description="Features of the basket completion (complete-the-basket) model.",
    tags={"target": "basket_completer"},
)

# Not a model's contract: what the gateway reads for the cart items (their codes and
# categories for cart_context, their co-purchase neighbours' ids to propose candidates).
basket_cart_v1 = FeatureService(
    name="basket_cart_v1",
    features=[
        item_copurchase[
            [
                "item_code",
                "category_code",
                *(f"cp_id_{k:02d}" for k in range(30)),
                *(f"cp_count_{k:02d}" for k in range(30)),
            ]
        ],
    ],
    description="The cart items' codes, categories and co-purchase neighbours (gateway reads).",
    tags={"role": "cart"},
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

bundle_ranker_v1 = FeatureService(
    name="bundle_ranker_v1",
    features=[
        *_user,
        bundle_stats[
            [
                *("n_items", "bundle_price", "parts_price", "price_ratio", "saving_pct"),
                *("main_category", "n_categories", "items_sales_7d_mean", "items_sales_30d_min"),
                *("items_sales_30d_mean", "items_rating_mean", "all_in_stock", "in_stock_share"),
                *("items_ctr_logit_mean", "internal_copurchase", "category_lift_mean"),
                *("same_category_share", "impressions_7d", "clicks_7d", "ctr_30d"),
                *("purchases_30d", "impressions_total", "clicks_total", "ctr_total"),
                *("ctr_total_logit", "ctr_eb_logit", "end_ts"),
            ]
        ],
        bundle_request_features,
    ],
    description="Features of the bundle ranking model.",
    tags={"target": "bundle_ranker"},
)
