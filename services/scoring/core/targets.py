"""Model targets: what a model ranks, the entity it scores and the feature service it reads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CandidateKind(StrEnum):
    """Kinds of candidates a request can rank; values match the Feast entity names."""

    ITEM = "item"
    ACTIVITY = "activity"


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
    """

    name: str
    kind: CandidateKind
    join_key: str
    feature_service: str
    popularity_ref: str | None = None
    category_ref: str | None = None
    in_stock_ref: str | None = None
    end_ts_ref: str | None = None


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
    )
}

DEFAULT_TARGET: dict[CandidateKind, str] = {t.kind: t.name for t in TARGETS.values()}


def get_target(name: str) -> Target:
    """Returns the target called `name`, or raises KeyError listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown model target {name!r}; known: {sorted(TARGETS)}") from None
