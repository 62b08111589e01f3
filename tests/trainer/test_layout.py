"""Input layout from the contract alone: groups, categorical columns, vectors, indicators."""

from __future__ import annotations

import pytest

from scoring.core.contract import FeatureContract, FeatureSpec
from scoring.trainer.layout import column_layout, feature_group, feature_groups

CONTRACT = FeatureContract.build(
    "item_ranker_v9",
    [
        FeatureSpec("user_profile", "membership_level", "Int64", 0.0, "user"),
        FeatureSpec("user_behavior", "ctr_30d", "Float32", 0.05, "user"),
        FeatureSpec("item_stats", "category", "Int64", -1.0, "item"),
        FeatureSpec("item_stats", "price", "Float32", 0.0, "item"),
        FeatureSpec("item_text", "embedding", "Float32", 0.0, "item"),
        FeatureSpec("item_request_features", "category_match", "Float32", 0.0, None),
        FeatureSpec("item_request_features", "hour_of_day", "Float32", 12.0, None),
        FeatureSpec("brand_stats", "brand_ctr", "Float32", 0.0, "brand"),
    ],
)


def test_groups_come_from_view_entity_and_name() -> None:
    groups = {f.name: feature_group(f) for f in CONTRACT.features}
    assert groups == {
        "membership_level": "user_profile",  # "emb" inside a word is not an embedding
        "ctr_30d": "user_behavior",
        "category": "item_popularity",
        "price": "price",
        "embedding": "text",
        "category_match": "affinity",
        "hour_of_day": "context",
        "brand_ctr": "brand",  # a new entity is its own group
    }
    assert feature_groups(CONTRACT) == (
        "user_behavior",
        "user_profile",
        "item_popularity",
        "price",
        "affinity",
        "text",
        "context",
        "brand",
    )


def test_int_features_are_categorical_and_vectors_expand() -> None:
    columns = column_layout(CONTRACT, 10, {"item_text__embedding": 3})
    assert [c.name for c in columns if c.categorical] == [
        "user_profile__membership_level",
        "item_stats__category",
    ]
    assert [c.name for c in columns if c.group == "text"] == [
        "item_text__embedding[0]",
        "item_text__embedding[1]",
        "item_text__embedding[2]",
    ]


@pytest.mark.parametrize("per", ["feature", "column"])
def test_missing_indicators_join_their_features_group(per: str) -> None:
    values = 10
    extra = len(CONTRACT.features) if per == "feature" else values
    columns = column_layout(CONTRACT, values + extra, {"item_text__embedding": 3})
    indicators = columns[values:]
    assert all(c.name.endswith(":missing") and not c.categorical for c in indicators)
    by_name = {c.name: c.group for c in indicators}
    assert by_name["item_stats__price:missing"] == "price"
    assert {c.group for c in indicators} == set(feature_groups(CONTRACT))


def test_unmappable_extra_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="map to neither"):
        column_layout(CONTRACT, len(CONTRACT.features) + 3)
