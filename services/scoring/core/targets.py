"""Model targets: what a model ranks, the entity it scores and the feature service it reads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CandidateKind(StrEnum):
    """Kinds of candidates a request can rank; values match the Feast entity names."""

    ITEM = "item"
    ACTIVITY = "activity"
    BUNDLE = "bundle"


@dataclass(frozen=True, slots=True)
class Target:
    """A model target: one Triton model fed by one Feast FeatureService.

    Attributes:
        name: Triton model name (folder under model_repository/).
        kind: the candidate kind it ranks.
        join_key: Feast join key of the candidate entity.
        feature_service: the FeatureService that is the model's feature contract.
        popularity_ref: feature ordering the fallback answer when the model is unreachable.
        category_ref: feature that diversity re-ranking spreads over.
        in_stock_ref: feature whose 0 means "out of stock" (business filter).
        end_ts_ref: feature holding an end time (Unix s) after which the candidate is dropped.
        unavailable_reason: the filter reason when `in_stock_ref` is 0.
        ended_reason: the filter reason when `end_ts_ref` has passed.
        cart_feature_service: a FeatureService read for the request's cart items (their codes,
            categories and co-purchase neighbours); set for targets that complete a basket: a
            request with a cart goes to such a target by default.
    """

    name: str
    kind: CandidateKind
    join_key: str
    feature_service: str
    popularity_ref: str | None = None
    category_ref: str | None = None
    in_stock_ref: str | None = None
    end_ts_ref: str | None = None
    unavailable_reason: str = "out_of_stock"
    ended_reason: str = "activity_ended"
    cart_feature_service: str | None = None


USER_ENTITY = "user"
USER_JOIN_KEY = "user_id"

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "item_ranker",
            CandidateKind.ITEM,
            "item_id",
            "item_ranker_v1",
            popularity_ref="item_stats__sales_7d",
            category_ref="item_stats__category",
            in_stock_ref="item_stats__in_stock",
        ),
        Target(
            "activity_ranker",
            CandidateKind.ACTIVITY,
            "activity_id",
            "activity_ranker_v1",
            popularity_ref="activity_stats__participants_7d",
            category_ref="activity_stats__target_category",
            end_ts_ref="activity_stats__end_ts",
        ),
        Target(
            "basket_completer",
            CandidateKind.ITEM,
            "item_id",
            "basket_completer_v1",
            popularity_ref="item_stats__sales_7d",
            category_ref="item_stats__category",
            in_stock_ref="item_stats__in_stock",
            cart_feature_service="basket_cart_v1",
        ),
        Target(
            "bundle_ranker",
            CandidateKind.BUNDLE,
            "bundle_id",
            "bundle_ranker_v1",
            popularity_ref="bundle_stats__purchases_30d",
            category_ref="bundle_stats__main_category",
            in_stock_ref="bundle_stats__all_in_stock",
            end_ts_ref="bundle_stats__end_ts",
            unavailable_reason="bundle_item_unavailable",
            ended_reason="bundle_ended",
        ),
    )
}

# Without a cart: the target of each kind that needs none. With one: BASKET_TARGET.
DEFAULT_TARGET: dict[CandidateKind, str] = {
    t.kind: t.name for t in TARGETS.values() if t.cart_feature_service is None
}
BASKET_TARGET = "basket_completer"

# The request-time inputs of a basket target's features (features/basket.py `cart_context`):
# the cart's first CART_SLOTS items, as item codes and category codes (-1: an empty slot).
CART_SLOTS = 20
CART_ITEM_FIELDS = tuple(f"cart_item_{k:02d}" for k in range(CART_SLOTS))
CART_CATEGORY_FIELDS = tuple(f"cart_category_{k:02d}" for k in range(CART_SLOTS))
CART_SIZE_FIELD = "cart_size"


def get_target(name: str) -> Target:
    """Returns the target called `name`, or raises KeyError listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown model target {name!r}; known: {sorted(TARGETS)}") from None
