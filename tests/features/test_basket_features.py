"""Basket features: the candidate against the cart, the same on every path; the stored views'
codes are the ones the gateway's cart read and the rest of the build use."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoring.core.codes import item_codes
from scoring.core.contract import contract_from_store
from scoring.core.targets import (
    CART_CATEGORY_FIELDS,
    CART_ITEM_FIELDS,
    CART_SIZE_FIELD,
    CART_SLOTS,
    TARGETS,
)
from scoring.datagen import baskets
from scoring.datagen.collaborative import NEIGHBOURS as CO_NEIGHBOURS

from ..conftest import FeatureRepo

VIEW = "basket_features"
CART_FIELDS = (*CART_ITEM_FIELDS, *CART_CATEGORY_FIELDS, CART_SIZE_FIELD)


@pytest.fixture(scope="module")
def store(feature_repo_ready: FeatureRepo) -> Any:
    return feature_repo_ready.store()


def transform(store: Any, columns: dict[str, list[float]], rows: int) -> pd.DataFrame:
    """The view's UDF on hand-made inputs (short names, as Feast passes them; NaN unless given)."""
    odfv = store.get_on_demand_feature_view(VIEW)
    inputs: dict[str, list[float]] = {}
    for projection in odfv.source_feature_view_projections.values():
        for feature in projection.features:
            inputs[feature.name] = columns.get(feature.name, [np.nan] * rows)
    for name in CART_FIELDS:
        inputs[name] = columns.get(name, [-1.0] * rows)
    out: pd.DataFrame = odfv.feature_transformation.transform(pd.DataFrame(inputs))
    return out


def slots(prefix: str, values: list[list[float]], n: int) -> dict[str, list[float]]:
    """Columns prefix_00 .. prefix_{n-1}, one list of values per row (NaN after them)."""
    return {
        f"{prefix}_{k:02d}": [row[k] if k < len(row) else np.nan for row in values]
        for k in range(n)
    }


def cart(values: list[list[float]], prefix: str) -> dict[str, list[float]]:
    return {
        f"{prefix}_{k:02d}": [row[k] if k < len(row) else -1.0 for row in values]
        for k in range(CART_SLOTS)
    }


def test_the_candidate_against_the_cart(store: Any) -> None:
    # Rows: a candidate with neighbours 200, 300, 400 whose cart holds 300, 400 and an item it
    # never goes with; the cart's item 300 as the candidate; a candidate without a row; an
    # empty cart.
    neighbours = [[200.0, 300.0, 400.0], [100.0], [], [200.0]]
    carts = [[300.0, 400.0, 999.0], [300.0, 400.0, 999.0], [300.0], []]
    out = transform(
        store,
        {
            "item_code": [100.0, 300.0, np.nan, 100.0],
            "category_code": [3.0, 5.0, np.nan, 3.0],
            "basket_count": [9.0, 4.0, np.nan, 9.0],
            **slots("cp_item", neighbours, baskets.NEIGHBOURS),
            **slots("cp_count", [[6.0, 2.0, 1.0], [2.0], [], [6.0]], baskets.NEIGHBOURS),
            **slots("cp_count_30d", [[3.0, 0.0, 1.0], [1.0], [], [3.0]], baskets.NEIGHBOURS),
            **slots("cp_pmi", [[1.5, 0.4, -0.2], [0.9], [], [1.5]], baskets.NEIGHBOURS),
            **slots("cc_category", [[5.0, 7.0], [3.0], [], [5.0]], baskets.COMPLEMENTS),
            **slots("cc_lift", [[0.8, 0.3], [0.6], [], [0.8]], baskets.COMPLEMENTS),
            # Its cosine neighbours (item_cooccurrence) meet the cart's 999 and 300.
            **slots("co_item", [[999.0, 500.0, 300.0], [], [], [200.0]], CO_NEIGHBOURS),
            **slots("co_score", [[0.3, 0.2, 0.1], [], [], [0.5]], CO_NEIGHBOURS),
            **cart(carts, "cart_item"),
            **cart([[5.0, 3.0, 8.0], [5.0, 3.0, 8.0], [5.0], []], "cart_category"),
            CART_SIZE_FIELD: [3.0, 3.0, 1.0, 0.0],
        },
        rows=4,
    )
    first = out.iloc[0]
    assert first["in_cart"] == 0 and first["cart_size"] == 3
    assert first["cp_cart_hits"] == 2  # 300 and 400
    assert (first["cp_cart_count_sum"], first["cp_cart_count_max"]) == (3.0, 2.0)
    assert first["cp_cart_count_30d_sum"] == 1.0
    np.testing.assert_allclose(
        first[["cp_cart_pmi_sum", "cp_cart_pmi_max", "cp_cart_pmi_mean"]].to_numpy(float),
        [0.2, 0.4, 0.2 / 3],
        rtol=1e-6,
    )
    # Normalised by the cart's 3 known items.
    np.testing.assert_allclose(
        first[["cp_cart_hit_share", "cp_cart_count_mean"]].to_numpy(float), [2 / 3, 1.0]
    )
    assert first["co_cart_hits"] == 2
    np.testing.assert_allclose(
        first[["co_cart_score_sum", "co_cart_score_max", "co_cart_score_mean"]].to_numpy(float),
        [0.4, 0.3, 0.4 / 3],
        rtol=1e-6,
    )
    # Cart categories 5 (lift 0.8), 3 (the candidate's own: not a complement, 0) and 8 (0).
    np.testing.assert_allclose(
        first[["cc_cart_lift_max", "cc_cart_lift_mean", "cart_same_category_share"]].to_numpy(
            float
        ),
        [0.8, 0.8 / 3, 1 / 3],
        rtol=1e-6,
    )
    assert first["candidate_basket_count_log"] == pytest.approx(np.log(10.0))
    assert out.loc[1, "in_cart"] == 1
    unknown = out.iloc[2]
    assert unknown.drop("cart_size").isna().all() and unknown["cart_size"] == 1
    empty = out.iloc[3]
    assert (empty.drop("candidate_basket_count_log") == 0).all()  # an empty cart: no evidence


def random_columns(names: list[str], rows: int, seed: int) -> dict[str, list[Any]]:
    """Small integer values (codes meet: the cart's items are among the neighbours now and
    then), a hole in every column, in varying rows."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Any]] = {}
    for i, name in enumerate(names):
        values: list[Any] = rng.integers(-2, 12, rows).astype(float).tolist()
        values[i % rows] = None
        out[name] = values
    return out


def test_the_gateways_array_path_gives_the_dataframe_paths_values(store: Any) -> None:
    """The gateway calls the view on numpy columns (its `inputs: arrays` tag), Feast and the
    trainer on a DataFrame: the same values, bit for bit."""
    from scoring.gateway.read_plan import OnDemand

    odfv = store.get_on_demand_feature_view(VIEW)
    on_demand = OnDemand.of(odfv)
    assert on_demand.arrays and on_demand.direct
    assert [name for name, _ in on_demand.request_fields] == list(CART_FIELDS)
    rows = 40
    columns = random_columns([full for full, _ in on_demand.inputs], rows, seed=1)
    rng = np.random.default_rng(2)
    request: dict[str, Any] = {name: float(rng.integers(-1, 12)) for name in CART_FIELDS}
    request[CART_ITEM_FIELDS[3]] = None  # a hole in the request too
    got = on_demand.compute(columns, request, rows)

    frame = pd.DataFrame(
        {short: np.asarray(columns[full], dtype=float) for full, short in on_demand.inputs}
    )
    for name in CART_FIELDS:
        frame[name] = np.nan if request[name] is None else request[name]
    expected = odfv.feature_transformation.transform(frame)
    assert list(got) == [f"{VIEW}__{name}" for name in expected.columns]
    for name in expected.columns:
        out = np.asarray(got[f"{VIEW}__{name}"])
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected[name].to_numpy(), err_msg=name)
    values = expected.to_numpy()
    assert np.isnan(values).any() and not np.isnan(values).all()
    assert (expected["cp_cart_hits"] > 0).any()  # the random codes did meet

    plain = dataclasses.replace(on_demand, arrays=False)
    again = plain.compute(columns, request, rows)
    for name, v in got.items():
        np.testing.assert_array_equal(np.asarray(again[name]), v, err_msg=name)


def test_missing_values_read_the_same_in_every_pandas_form(store: Any) -> None:
    """NaN, None in an object column, pd.NA in a nullable integer column: the same outputs."""
    odfv = store.get_on_demand_feature_view(VIEW)
    names = [f.name for p in odfv.source_feature_view_projections.values() for f in p.features]
    rows = 8
    raw = random_columns([*names, *CART_FIELDS], rows, seed=3)
    floats = {n: np.array([np.nan if v is None else v for v in col]) for n, col in raw.items()}
    as_float = odfv.feature_transformation.transform(pd.DataFrame(floats))
    as_none = pd.DataFrame({n: pd.Series(col, dtype=object) for n, col in raw.items()})
    as_nullable = pd.DataFrame(
        {n: pd.array([None if v is None else int(v) for v in col], dtype="Int64")
         for n, col in raw.items()}
    )  # fmt: skip
    for frame in (as_none, as_nullable, as_nullable.astype(object)):
        pd.testing.assert_frame_equal(odfv.feature_transformation.transform(frame), as_float)


def test_the_repos_names_agree_with_the_build_and_the_targets(store: Any) -> None:
    cart_context = store.get_on_demand_feature_view(VIEW).source_request_sources["cart_context"]
    assert [f.name for f in cart_context.schema] == list(CART_FIELDS)
    view = store.get_feature_view("item_copurchase")
    assert sum(f.name.startswith("cp_id_") for f in view.features) == baskets.NEIGHBOURS
    assert sum(f.name.startswith("cc_lift_") for f in view.features) == 0
    complements = store.get_feature_view("category_complements")
    assert sum(f.name.startswith("cc_lift_") for f in complements.features) == baskets.COMPLEMENTS
    target = TARGETS["basket_completer"]
    contract = contract_from_store(store, target.feature_service)
    item = contract_from_store(store, TARGETS["item_ranker"].feature_service)
    assert contract.refs[: len(item.refs)] == item.refs  # the item ranker's, then the cart's
    assert {ref.split("__")[0] for ref in contract.refs[len(item.refs) :]} == {VIEW}
    assert set(CART_FIELDS) <= set(contract.request_fields)
    cart_service = store.get_feature_service(target.cart_feature_service)
    (projection,) = cart_service.feature_view_projections
    names = [f.name for f in projection.features]
    assert names[:2] == ["item_code", "category_code"]
    assert {n for n in names if n.startswith("cp_id_")} == {
        f"cp_id_{k:02d}" for k in range(baskets.NEIGHBOURS)
    }


def test_codes_are_the_builds(feature_repo_ready: FeatureRepo) -> None:
    """item_code is the collaborative views' code, category_code the item_stats category."""
    tables = feature_repo_ready.data.tables
    cp = tables["item_copurchase"].drop_duplicates("item_id").set_index("item_id")
    stats = tables["item_stats"].drop_duplicates("item_id").set_index("item_id")["category"]
    assert len(cp) == len(stats)
    np.testing.assert_array_equal(cp["category_code"], stats.reindex(cp.index).astype(float))
    np.testing.assert_array_equal(cp["item_code"], item_codes(cp.index.to_numpy(object)))
    # The synthetic log's orders give most items neighbours.
    last = tables["item_copurchase"].groupby("item_id").tail(1)
    assert last["cp_id_00"].notna().mean() > 0.5


def last_rows(feature_repo_ready: FeatureRepo) -> pd.DataFrame:
    cp = feature_repo_ready.data.tables["item_copurchase"]
    return cp.sort_values("event_timestamp").groupby("item_id").tail(1).set_index("item_id")


def test_training_reads_the_candidates_neighbours_as_of_the_row(
    feature_repo_ready: FeatureRepo, store: Any
) -> None:
    """Through Feast's point-in-time join (item_cooccurrence's and item_copurchase's
    `item_code` side by side): a cart of the candidate's neighbours hits them."""
    last = last_rows(feature_repo_ready)
    full = last[last["cp_id_02"].notna()].head(5)
    assert len(full) == 5
    at = pd.Timestamp(feature_repo_ready.data.end) + pd.Timedelta(hours=1)
    user = feature_repo_ready.log.users["user_id"].iloc[0]
    rows = []
    for item, row in full.iterrows():
        neighbours = [row[f"cp_item_{k:02d}"] for k in range(3)]
        for cart_items in (neighbours, [row["item_code"], -1.0]):
            fields = {name: -1.0 for name in CART_FIELDS}
            for k, code in enumerate(cart_items):
                fields[CART_ITEM_FIELDS[k]] = code
            fields[CART_SIZE_FIELD] = float(len(cart_items))
            rows.append({"user_id": user, "item_id": item, **fields})
    entity = pd.DataFrame(rows)
    entity["row"] = np.arange(len(entity))
    # A time per row: Feast keeps one row per entity and time.
    entity["event_timestamp"] = at + pd.to_timedelta(entity["row"], unit="s")
    entity["request_ts"] = entity["event_timestamp"].astype("int64") // 10**9
    got = store.get_historical_features(
        entity_df=entity,
        features=store.get_feature_service("basket_completer_v1"),
        full_feature_names=True,
    ).to_df()
    got = got.sort_values("row", ignore_index=True)
    assert len(got) == len(entity)
    hits = got[f"{VIEW}__cp_cart_hits"].to_numpy()
    in_cart = got[f"{VIEW}__in_cart"].to_numpy()
    np.testing.assert_array_equal(hits[::2], 3.0)
    np.testing.assert_array_equal(in_cart, np.tile([0.0, 1.0], 5))
    expected = [sum(row[f"cp_pmi_{k:02d}"] for k in range(3)) for _, row in full.iterrows()]
    np.testing.assert_allclose(got[f"{VIEW}__cp_cart_pmi_sum"].to_numpy()[::2], expected, rtol=1e-5)


def test_the_cart_read_gives_the_neighbours_ids(
    feature_repo_ready: FeatureRepo, store: Any
) -> None:
    last = last_rows(feature_repo_ready)
    items = last[last["cp_id_00"].notna()].index[:4].tolist()
    online = store.get_online_features(
        features=store.get_feature_service("basket_cart_v1"),
        entity_rows=[{"item_id": item} for item in items],
    ).to_dict()
    for k in range(3):
        assert online[f"cp_id_{k:02d}"] == [
            None if pd.isna(v) else v for v in last.loc[items, f"cp_id_{k:02d}"]
        ]
    np.testing.assert_array_equal(online["item_code"], last.loc[items, "item_code"])
    np.testing.assert_array_equal(online["category_code"], last.loc[items, "category_code"])
