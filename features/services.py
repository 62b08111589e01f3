"""Feature services: one per model target, versioned. Each is the model's feature contract."""

from feast import FeatureService

from activity import activity_stats
from item import item_stats
from on_demand import activity_request_features, item_request_features
from user import user_behavior, user_profile

item_ranker_v1 = FeatureService(
    name="item_ranker_v1",
    features=[user_profile, user_behavior, item_stats, item_request_features],
    description="Features of the item (product) ranking model.",
    tags={"target": "item_ranker"},
)

activity_ranker_v1 = FeatureService(
    name="activity_ranker_v1",
    features=[user_profile, user_behavior, activity_stats, activity_request_features],
    description="Features of the activity (campaign/promotion) ranking model.",
    tags={"target": "activity_ranker"},
)
