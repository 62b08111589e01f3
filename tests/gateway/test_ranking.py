"""Post-processing: business filters, diversity (MMR), top_k, reasons."""

from __future__ import annotations

import numpy as np

from scoring.core.contract import FeatureContract, FeatureSpec
from scoring.core.targets import TARGETS
from scoring.gateway.ranking import (
    ACTIVITY_ENDED,
    IN_CART,
    OUT_OF_STOCK,
    Columns,
    in_cart,
    rank,
    reasons,
    unavailable,
)


def test_rank_orders_by_score_stably_and_cuts_top_k() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.9])
    np.testing.assert_array_equal(rank(scores, 10), [1, 3, 2, 0])
    np.testing.assert_array_equal(rank(scores, 2), [1, 3])


def test_rank_excludes_dropped_candidates() -> None:
    np.testing.assert_array_equal(rank(np.array([0.2, 0.9, 0.5]), 10, exclude={1}), [2, 0])
    assert rank(np.array([0.3]), 5, exclude={0}).size == 0


def test_diversity_spreads_categories() -> None:
    scores = np.array([0.95, 0.94, 0.93, 0.60, 0.50])
    categories = np.array([1, 1, 1, 2, 3])
    np.testing.assert_array_equal(rank(scores, 3, 0.0, categories), [0, 1, 2])
    diverse = rank(scores, 3, 0.7, categories)
    assert diverse[0] == 0, "the best candidate still leads"
    assert set(categories[diverse]) == {1, 2, 3}


def test_filters_act_on_known_values_only() -> None:
    item = TARGETS["item_ranker"]
    specs = [FeatureSpec("item_stats", "in_stock", "Int64", 1.0, "item")]
    contract = FeatureContract.build("s", specs)
    matrix = np.array([[1.0], [0.0], [1.0]], dtype=np.float32)  # row 2: default after missing
    missing = np.array([[False], [False], [True]])
    columns = Columns.of(item, contract, matrix, missing)
    assert unavailable(columns, request_ts=0) == {1: OUT_OF_STOCK}


def test_ended_activities_are_dropped() -> None:
    activity = TARGETS["activity_ranker"]
    specs = [FeatureSpec("activity_stats", "end_ts", "Float64", 0.0, "activity")]
    contract = FeatureContract.build("s", specs)
    matrix = np.array([[100.0], [300.0], [0.0]], dtype=np.float32)
    missing = np.array([[False], [False], [True]])
    columns = Columns.of(activity, contract, matrix, missing)
    assert unavailable(columns, request_ts=200) == {0: ACTIVITY_ENDED}


def test_columns_absent_from_the_contract_disable_their_rule() -> None:
    contract = FeatureContract.build("s", [FeatureSpec("v", "x", "Float32", 0.0, "item")])
    columns = Columns.of(TARGETS["item_ranker"], contract, np.zeros((2, 1)), np.zeros((2, 1), bool))
    assert columns.in_stock is None and columns.category is None
    assert unavailable(columns, request_ts=0) == {}


def test_reasons_rank_groups_by_absolute_contribution() -> None:
    got = reasons(np.array([0.1, -0.8, 0.5, 0.05]), ["user", "price", "item", "time"], top=3)
    assert got == [("price", -0.8), ("item", 0.5), ("user", 0.1)]


def test_columns_are_found_after_a_vector_feature() -> None:
    specs = [
        FeatureSpec("item_embedding", "text", "Array(Float32)", 0.0, "item", length=3),
        FeatureSpec("item_stats", "in_stock", "Int64", 1.0, "item"),
    ]
    contract = FeatureContract.build("s", specs)
    values = np.array([[0.1, 0.2, 0.3, 0.0], [0.4, 0.5, 0.6, 1.0]], dtype=np.float32)
    columns = Columns.of(TARGETS["item_ranker"], contract, values, np.zeros((2, 4), bool))
    assert columns.in_stock is not None
    np.testing.assert_array_equal(columns.in_stock, [0.0, 1.0])
    assert unavailable(columns, request_ts=0) == {0: OUT_OF_STOCK}


def test_each_target_names_its_own_filter_reasons() -> None:
    bundle = TARGETS["bundle_ranker"]
    specs = [
        FeatureSpec("bundle_stats", "all_in_stock", "Float32", 1.0, "bundle"),
        FeatureSpec("bundle_stats", "end_ts", "Float64", 0.0, "bundle"),
    ]
    contract = FeatureContract.build("s", specs)
    matrix = np.array([[1.0, 300.0], [0.0, 300.0], [1.0, 100.0]], dtype=np.float32)
    columns = Columns.of(bundle, contract, matrix, np.zeros((3, 2), bool))
    assert unavailable(columns, request_ts=200) == {
        1: "bundle_item_unavailable",
        2: "bundle_ended",
    }
    assert (bundle.unavailable_reason, bundle.ended_reason) == (
        "bundle_item_unavailable",
        "bundle_ended",
    )


def test_candidates_in_the_cart_are_named() -> None:
    assert in_cart(("a", "b", "c", "d"), ("c", "a", "z")) == {0: IN_CART, 2: IN_CART}
    assert in_cart(("a", "b"), ()) == {}
    assert IN_CART == "in_cart"
