"""Request-time features: preference log-lifts, the hour on a circle, the ends-soon flag."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest

SLOTS = 16
HOUR = 3600


def transform(store: Any, view: str, columns: dict[str, list[float]]) -> pd.DataFrame:
    """The view's UDF on hand-made inputs (short names, as Feast passes them)."""
    odfv = store.get_on_demand_feature_view(view)
    inputs: dict[str, list[float]] = {}
    for projection in odfv.source_feature_view_projections.values():
        for feature in projection.features:
            inputs[feature.name] = columns.get(feature.name, [np.nan, np.nan])
    inputs["request_ts"] = columns["request_ts"]
    out: pd.DataFrame = odfv.feature_transformation.transform(pd.DataFrame(inputs))
    return out


def slots(prefix: str, counts: dict[int, float]) -> dict[str, list[float]]:
    """Two rows: the given per-slot counts, then a user without a history (NaN)."""
    return {f"{prefix}_{s:02d}": [counts.get(s, 0.0), np.nan] for s in range(SLOTS)}


@pytest.fixture(scope="module")
def store(feature_repo_ready: Any) -> Any:
    return feature_repo_ready.store()


def test_category_affinity_is_a_smoothed_log_lift(store: Any) -> None:
    views = {3: 6.0, 5: 2.0}  # 8 views in all, 6 in the candidate's slot (category 19 % 16)
    shown = {3: 1.0, 7: 3.0}
    out = transform(
        store,
        "item_request_features",
        {
            **slots("views_90d", views),
            **slots("impressions_90d", shown),
            "category": [19.0, 19.0],
            "request_ts": [21 * HOUR, 21 * HOUR],
        },
    )
    view_lift = np.log(16 * (6 + 0.25) / (8 + 16 * 0.25))
    shown_lift = np.log(16 * (1 + 0.25) / (4 + 16 * 0.25))
    got = out[["category_view_affinity", "category_impression_affinity"]].to_numpy()
    np.testing.assert_allclose(got[0], [view_lift, shown_lift], rtol=1e-6)
    assert np.isnan(got[1]).all()  # no history row: missing, so the declared default applies
    hour = 2 * np.pi * 21 / 24
    np.testing.assert_allclose(out.loc[0, ["hour_sin", "hour_cos"]], [np.sin(hour), np.cos(hour)])


def test_campaign_uses_its_better_target_and_flags_its_last_two_days(store: Any) -> None:
    end = 100 * HOUR
    out = transform(
        store,
        "activity_request_features",
        {
            **slots("views_90d", {2: 1.0, 4: 5.0}),
            **slots("impressions_90d", {}),
            "target_category": [2.0, 2.0],
            "target_category_2": [4.0, -1.0],
            "end_ts": [float(end), float(end)],
            "request_ts": [end - 47 * HOUR, end - 49 * HOUR],
        },
    )
    np.testing.assert_allclose(
        out.loc[0, "target_view_affinity"], np.log(16 * 5.25 / 10), rtol=1e-6
    )
    assert out.loc[0, "target_impression_affinity"] == pytest.approx(0.0)  # no evidence: 0
    assert out["ending_soon"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("view", ["item_request_features", "activity_request_features"])
def test_missing_values_read_the_same_in_every_pandas_form(store: Any, view: str) -> None:
    """Missing inputs reach a UDF as NaN, None in an object column, or pd.NA in a nullable
    integer column, depending on the path (online read, offline join): the outputs agree."""
    rng = np.random.default_rng(0)
    odfv = store.get_on_demand_feature_view(view)
    names = [f.name for p in odfv.source_feature_view_projections.values() for f in p.features]
    rows = 6
    floats = {n: rng.integers(1, 20, rows).astype(float) for n in names}  # no 0: a ratio input
    for i, n in enumerate(names):
        floats[n][i % rows] = np.nan  # every column has a hole, in varying rows
    floats["request_ts"] = np.full(rows, 30 * 86400.0)
    as_float = odfv.feature_transformation.transform(pd.DataFrame(floats))
    as_none = pd.DataFrame(
        {n: pd.Series([None if np.isnan(v) else v for v in col], dtype=object)
         for n, col in floats.items()}
    )  # fmt: skip
    as_nullable = pd.DataFrame(
        {n: pd.array([None if np.isnan(v) else int(v) for v in col], dtype="Int64")
         for n, col in floats.items()}
    )  # fmt: skip
    as_na_object = as_nullable.astype(object)  # pd.NA inside object columns
    for frame in (as_none, as_nullable, as_na_object):
        got = odfv.feature_transformation.transform(frame)
        pd.testing.assert_frame_equal(got, as_float)
    assert as_float.isna().to_numpy().any()  # the holes propagate


@pytest.mark.parametrize("view", ["item_request_features", "activity_request_features"])
def test_the_gateways_array_path_gives_the_dataframe_paths_values(store: Any, view: str) -> None:
    """The gateway calls a view tagged `inputs: arrays` on numpy columns (no pandas on the
    request path); Feast and the trainer call it on a DataFrame. Same values, bit for bit, and
    the gateway takes the array path for both of the repo's views."""
    from scoring.gateway.read_plan import OnDemand

    rng = np.random.default_rng(1)
    odfv = store.get_on_demand_feature_view(view)
    on_demand = OnDemand.of(odfv)
    assert on_demand.arrays and on_demand.direct
    rows = 9
    columns: dict[str, Any] = {}
    for i, (full, _) in enumerate(on_demand.inputs):
        values: list[Any] = rng.integers(-2, 40, rows).astype(float).tolist()
        values[i % rows] = None  # a hole in every column, in varying rows
        columns[full] = values
    request = {"request_ts": 1_700_000_000 + int(rng.integers(0, 86400))}
    got = on_demand.compute(columns, request, rows)

    frame = pd.DataFrame(
        {short: np.asarray(columns[full], dtype=float) for full, short in on_demand.inputs}
    )
    frame["request_ts"] = float(request["request_ts"])
    expected = odfv.feature_transformation.transform(frame)
    assert list(got) == [f"{view}__{name}" for name in expected.columns]
    for name in expected.columns:
        out = np.asarray(got[f"{view}__{name}"])
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, expected[name].to_numpy(), err_msg=name)
    assert np.isnan(expected.to_numpy()).any() and not np.isnan(expected.to_numpy()).all()

    # Without the tag the same view goes through a DataFrame, with the same result.
    plain = dataclasses.replace(on_demand, arrays=False)
    again = plain.compute(columns, request, rows)
    for name, values in got.items():
        np.testing.assert_array_equal(np.asarray(again[name]), values, err_msg=name)


def test_price_to_aov_is_missing_for_a_zero_spend(store: Any) -> None:
    with np.errstate(all="raise"):  # no division by zero on the way
        out = transform(
            store,
            "item_request_features",
            {
                "price": [30.0, 30.0],
                "avg_order_value_30d": [60.0, 0.0],  # a user whose orders were all free
                "request_ts": [HOUR, HOUR],
            },
        )
    got = out["price_to_aov"].to_numpy()
    assert got[0] == pytest.approx(0.5)
    assert np.isnan(got[1])  # missing (as for no spend): the declared default and indicator apply
