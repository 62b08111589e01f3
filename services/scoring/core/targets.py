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
    """

    name: str
    kind: CandidateKind
    join_key: str
    feature_service: str


USER_ENTITY = "user"
USER_JOIN_KEY = "user_id"

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("item_ranker", CandidateKind.ITEM, "item_id", "item_ranker_v1"),
        Target("activity_ranker", CandidateKind.ACTIVITY, "activity_id", "activity_ranker_v1"),
    )
}

DEFAULT_TARGET: dict[CandidateKind, str] = {t.kind: t.name for t in TARGETS.values()}


def get_target(name: str) -> Target:
    """Returns the target called `name`, or raises KeyError listing the known ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown model target {name!r}; known: {sorted(TARGETS)}") from None
