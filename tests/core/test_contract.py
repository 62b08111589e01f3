"""The feature contract: order, defaults, vectors, missing indicators, hash, from the registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoring.core.contract import (
    FeatureContract,
    FeatureSpec,
    _parse_length,
    contract_from_store,
)
from scoring.core.errors import ContractMismatchError


def spec(name: str, default: float = 0.0, entity: str | None = "user") -> FeatureSpec:
    return FeatureSpec("v", name, "Float32", default, entity)


def vec(name: str, length: int, default: float = 0.0, entity: str | None = "item") -> FeatureSpec:
    return FeatureSpec("e", name, "Array(Float32)", default, entity, length)


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
    embedding = by_ref["item_embedding__embedding"]
    assert (embedding.dtype, embedding.length, embedding.entity) == ("Array(Float32)", 16, "item")
    assert contract.request_fields == ("request_ts",)
    assert len(contract.schema_hash) == 16
    # Layout: every value column, then one indicator per feature.
    assert contract.width == contract.value_width + len(contract.features)
    assert contract.columns[-1] == f"{contract.refs[-1]}__missing"
    assert "item_embedding__embedding[15]" in contract.value_columns


def test_targets_have_distinct_contracts(feature_repo_ready: Any) -> None:
    store = feature_repo_ready.store()
    item = contract_from_store(store, "item_ranker_v1")
    activity = contract_from_store(store, "activity_ranker_v1")
    assert item.schema_hash != activity.schema_hash
    assert "activity_stats__discount_pct" in activity.refs


def test_schema_hash_changes_with_order_dtype_default_and_length() -> None:
    base = FeatureContract.build("s", [spec("a"), spec("b")])
    assert base.schema_hash == FeatureContract.build("s", [spec("a"), spec("b")]).schema_hash
    assert base.schema_hash != FeatureContract.build("s", [spec("b"), spec("a")]).schema_hash
    assert base.schema_hash != FeatureContract.build("s", [spec("a"), spec("b", 1.0)]).schema_hash
    other_dtype = FeatureSpec("v", "b", "Int64", 0.0, "user")
    assert base.schema_hash != FeatureContract.build("s", [spec("a"), other_dtype]).schema_hash
    assert (
        FeatureContract.build("s", [vec("x", 8)]).schema_hash
        != FeatureContract.build("s", [vec("x", 16)]).schema_hash
    )


def test_assemble_orders_columns_fills_defaults_and_appends_indicators() -> None:
    contract = FeatureContract.build("s", [spec("a", 7.0), spec("b", -1.0, "item")])
    frame = pd.DataFrame({"v__b": [1.5, None, np.nan], "v__a": [None, 2, 3], "extra": [9, 9, 9]})
    out = contract.assemble(frame)
    assert out.matrix.dtype == np.float32
    assert out.matrix.flags["C_CONTIGUOUS"]
    assert contract.columns == ["v__a", "v__b", "v__a__missing", "v__b__missing"]
    np.testing.assert_array_equal(
        out.matrix, [[7.0, 1.5, 1.0, 0.0], [2.0, -1.0, 0.0, 1.0], [3.0, -1.0, 0.0, 1.0]]
    )
    np.testing.assert_array_equal(out.missing, [[True, False], [False, True], [False, True]])
    np.testing.assert_array_equal(out.indicators, out.missing)
    np.testing.assert_array_equal(contract.columns_of("item"), [1])


def test_a_present_value_equal_to_its_default_is_not_missing() -> None:
    contract = FeatureContract.build("s", [spec("a", 0.0)])
    out = contract.assemble({"v__a": [0.0, None]})
    np.testing.assert_array_equal(out.matrix, [[0.0, 0.0], [0.0, 1.0]])


def test_vectors_expand_into_columns_with_one_indicator() -> None:
    contract = FeatureContract.build("s", [spec("a", 5.0), vec("x", 3, -1.0), spec("b")])
    assert contract.value_columns == ["v__a", "e__x[0]", "e__x[1]", "e__x[2]", "v__b"]
    assert contract.width == 5 + 3
    np.testing.assert_array_equal(contract.columns_of("item"), [1, 2, 3])
    frame = {
        "v__a": [1.0, None, 2.0],
        "e__x": [[0.1, 0.2, 0.3], None, np.array([1.0, 2.0, 3.0], dtype=np.float32)],
        "v__b": [4.0, 5.0, None],
    }
    out = contract.assemble(frame)
    np.testing.assert_allclose(
        out.matrix,
        [
            [1.0, 0.1, 0.2, 0.3, 4.0, 0, 0, 0],
            [5.0, -1.0, -1.0, -1.0, 5.0, 1, 1, 0],
            [2.0, 1.0, 2.0, 3.0, 0.0, 0, 0, 1],
        ],
        rtol=1e-6,
    )
    assert out.missing.shape == (3, 5) and out.indicators.shape == (3, 3)


def test_vector_nan_from_a_point_in_time_join_is_missing() -> None:
    contract = FeatureContract.build("s", [vec("x", 2, 9.0)])
    out = contract.assemble(pd.DataFrame({"e__x": [np.nan, [1.0, 2.0]]}))
    np.testing.assert_array_equal(out.matrix, [[9.0, 9.0, 1.0], [1.0, 2.0, 0.0]])


def test_a_vector_of_another_length_is_refused_naming_it() -> None:
    contract = FeatureContract.build("s", [vec("x", 3)])
    with pytest.raises(ContractMismatchError, match=r"e__x has 2 values in row 1.*declares 3"):
        contract.assemble({"e__x": [[1.0, 2.0, 3.0], [1.0, 2.0]]})


def test_assemble_accepts_column_lists_as_from_feast_to_dict() -> None:
    contract = FeatureContract.build("s", [spec("a", 7.0)])
    out = contract.assemble({"v__a": [None, 4]})
    np.testing.assert_array_equal(out.matrix[:, 0], [7.0, 4.0])


def test_assemble_refuses_a_store_without_a_contract_column() -> None:
    contract = FeatureContract.build("s", [spec("a"), spec("b")])
    with pytest.raises(ContractMismatchError, match=r"v__b"):
        contract.assemble(pd.DataFrame({"v__a": [1.0]}))


def test_vectors_need_a_declared_length_and_strings_are_refused() -> None:
    assert _parse_length("Float32", {}, "w") == 1
    assert _parse_length("Array(Float32)", {"length": "16"}, "w") == 16
    with pytest.raises(ValueError, match="fixed length"):
        _parse_length("Array(Float32)", {}, "s: v:x")
    with pytest.raises(ValueError, match="not numeric"):
        _parse_length("String", {}, "s: v:x")


def test_manifest_json_describes_the_layout() -> None:
    contract = FeatureContract.build("s", [spec("a"), vec("x", 2)])
    doc = contract.to_json()
    assert doc["layout"] == "values+missing_indicators/v1"
    assert doc["width"] == 5
    assert doc["features"][1]["length"] == 2


@pytest.mark.parametrize("as_frame", [False, True])
def test_values_that_are_not_numbers_are_missing_and_the_rest_still_count(as_frame: bool) -> None:
    # One odd column sends assembly column by column; the clean columns must not change.
    contract = FeatureContract.build(
        "s", [spec("a", 7.0), spec("odd", -1.0), FeatureSpec("v", "flag", "Bool", 0.0, "user")]
    )
    columns: dict[str, list[Any]] = {
        "v__a": [1.5, None, float("nan")],
        "v__odd": ["2.5", "not a number", pd.NA],
        "v__flag": [True, False, None],
    }
    out = contract.assemble(pd.DataFrame(columns) if as_frame else columns)
    np.testing.assert_array_equal(
        out.matrix,
        [
            [1.5, 2.5, 1.0, 0, 0, 0],
            [7.0, -1.0, 0.0, 1, 1, 0],
            [7.0, -1.0, 0.0, 1, 1, 1],
        ],
    )
    assert out.matrix.dtype == np.float32 and out.matrix.flags.c_contiguous
    clean = contract.assemble({**columns, "v__odd": [2.5, None, None]})
    np.testing.assert_array_equal(out.matrix, clean.matrix)


def test_no_rows_assemble_to_an_empty_matrix_of_the_full_width() -> None:
    contract = FeatureContract.build("s", [spec("a"), vec("x", 3)])
    out = contract.assemble({"v__a": [], "e__x": []})
    assert out.matrix.shape == (0, contract.width) and out.indicators.shape == (0, 2)
