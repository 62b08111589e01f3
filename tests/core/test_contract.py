"""The feature contract: order, defaults, hash and assembly, from the real Feast registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoring.core.contract import FeatureContract, FeatureSpec, contract_from_store
from scoring.core.errors import ContractMismatchError


def spec(name: str, default: float = 0.0, entity: str | None = "user") -> FeatureSpec:
    return FeatureSpec("v", name, "Float32", default, entity)


def test_contract_follows_feature_service_order_with_declared_defaults(
    feature_repo_ready: Any,
) -> None:
    store = feature_repo_ready.store()
    contract = contract_from_store(store, "item_ranker_v1")
    service = store.get_feature_service("item_ranker_v1")
    expected = [f"{p.name}__{f.name}" for p in service.feature_view_projections for f in p.features]
    assert contract.refs == expected
    by_ref = {f.ref: f for f in contract.features}
    assert by_ref["item_stats__rating"].default == 3.5  # Field tag
    assert by_ref["user_behavior__ctr_30d"].default == 0.05
    assert by_ref["item_request_features__price_to_aov"].default == 1.0  # on-demand view tag
    assert by_ref["item_stats__price"].entity == "item"
    assert by_ref["user_profile__age_bucket"].entity == "user"
    assert by_ref["item_request_features__hour_of_day"].entity is None
    assert contract.request_fields == ("request_ts",)
    assert len(contract.schema_hash) == 16


def test_targets_have_distinct_contracts(feature_repo_ready: Any) -> None:
    store = feature_repo_ready.store()
    item = contract_from_store(store, "item_ranker_v1")
    activity = contract_from_store(store, "activity_ranker_v1")
    assert item.schema_hash != activity.schema_hash
    assert "activity_stats__discount_pct" in activity.refs


def test_schema_hash_changes_with_order_dtype_and_default() -> None:
    base = FeatureContract.build("s", [spec("a"), spec("b")])
    assert base.schema_hash == FeatureContract.build("s", [spec("a"), spec("b")]).schema_hash
    assert base.schema_hash != FeatureContract.build("s", [spec("b"), spec("a")]).schema_hash
    assert base.schema_hash != FeatureContract.build("s", [spec("a"), spec("b", 1.0)]).schema_hash
    other_dtype = FeatureSpec("v", "b", "Int64", 0.0, "user")
    assert base.schema_hash != FeatureContract.build("s", [spec("a"), other_dtype]).schema_hash


def test_assemble_orders_columns_and_fills_defaults() -> None:
    contract = FeatureContract.build("s", [spec("a", 7.0), spec("b", -1.0, "item")])
    frame = pd.DataFrame({"v__b": [1.5, None, np.nan], "v__a": [None, 2, 3], "extra": [9, 9, 9]})
    out = contract.assemble(frame)
    assert out.matrix.dtype == np.float32
    assert out.matrix.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out.matrix, [[7.0, 1.5], [2.0, -1.0], [3.0, -1.0]])
    np.testing.assert_array_equal(out.missing, [[True, False], [False, True], [False, True]])
    np.testing.assert_array_equal(contract.columns_of("item"), [1])


def test_assemble_accepts_column_lists_as_from_feast_to_dict() -> None:
    contract = FeatureContract.build("s", [spec("a", 7.0)])
    out = contract.assemble({"v__a": [None, 4]})
    np.testing.assert_array_equal(out.matrix[:, 0], [7.0, 4.0])


def test_assemble_refuses_a_store_without_a_contract_column() -> None:
    contract = FeatureContract.build("s", [spec("a"), spec("b")])
    with pytest.raises(ContractMismatchError, match=r"v__b"):
        contract.assemble(pd.DataFrame({"v__a": [1.0]}))
