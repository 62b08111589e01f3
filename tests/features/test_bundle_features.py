"""The bundle ranker's features: bundle_request_features' values, its DataFrame and array
forms (the checks of test_request_features, run on this view too), and its contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from scoring.core.contract import contract_from_store

from . import test_request_features as request_features

DAY = 86_400
VIEW = "bundle_request_features"


@pytest.fixture(scope="module")
def store(feature_repo_ready: Any) -> Any:
    return feature_repo_ready.store()


def slots(prefix: str, n: int, first: list[float], default: float) -> dict[str, list[float]]:
    """Two rows: the given leading values (then `default`), then a row without a value (NaN)."""
    return {
        f"{prefix}_{k:02d}": [first[k] if k < len(first) else default, np.nan] for k in range(n)
    }


def test_the_bundle_is_matched_against_the_users_items_and_categories(store: Any) -> None:
    now = 100 * DAY
    affinity = {f"affinity_{s:02d}": [0.01, np.nan] for s in range(16)}
    affinity["affinity_03"] = [0.4, np.nan]
    affinity["affinity_05"] = [0.1, np.nan]
    # 8 views: 6 in slot 3, 2 in slot 5; 4 impressions, 1 in slot 3, 3 in slot 7.
    views = {f"views_90d_{s:02d}": [0.0, np.nan] for s in range(16)}
    views["views_90d_03"], views["views_90d_05"] = [6.0, np.nan], [2.0, np.nan]
    shown = {f"impressions_90d_{s:02d}": [0.0, np.nan] for s in range(16)}
    shown["impressions_90d_03"], shown["impressions_90d_07"] = [1.0, np.nan], [3.0, np.nan]
    out = request_features.transform(
        store,
        VIEW,
        {
            # Items 11, 12, 13; categories 19 (slot 3) and 5 twice: slot 3's share counts once
            # per item.
            **slots("bundle_item", 10, [11.0, 12.0, 13.0], -1.0),
            "bundle_category_00": [19.0, 19.0],
            "bundle_category_01": [5.0, 5.0],
            "bundle_category_02": [5.0, 5.0],
            **{f"bundle_category_{k:02d}": [-1.0, -1.0] for k in range(3, 10)},
            # Recent items 12 (bought), 40, 11 (seen only); the second user has no history.
            **slots("recent_item", 50, [12.0, 40.0, 11.0], np.nan),
            **slots("recent_purchases", 50, [2.0, 1.0, 0.0], np.nan),
            **affinity,
            **views,
            **shown,
            "bundle_price": [50.0, 50.0],
            "avg_order_value_30d": [40.0, 0.0],
            "start_ts": [float(now - 3 * DAY), float(now - 3 * DAY)],
            "end_ts": [float(now + DAY // 2), 4_102_444_800.0],
            "request_ts": [now, now],
        },
    )
    first = out.iloc[0]
    assert first["user_bundle_items_bought"] == 1
    assert first["user_bundle_items_seen_share"] == pytest.approx(2 / 3)
    assert first["user_bundle_category_affinity_mean"] == pytest.approx((0.4 + 0.1 + 0.1) / 3)
    assert first["user_bundle_category_affinity_max"] == pytest.approx(0.4)

    def lift(n: float, total: float) -> float:  # on_demand's smoothed log-lift
        return float(np.log(16 * (n + 0.25) / (total + 16 * 0.25)))

    view_lifts = [lift(6, 8), lift(2, 8), lift(2, 8)]
    assert first["user_bundle_category_view_affinity_mean"] == pytest.approx(
        np.mean(view_lifts), rel=1e-5
    )
    assert first["user_bundle_category_view_affinity_max"] == pytest.approx(lift(6, 8), rel=1e-5)
    assert first["user_bundle_category_impression_affinity_mean"] == pytest.approx(
        np.mean([lift(1, 4), lift(0, 4), lift(0, 4)]), rel=1e-5
    )
    assert first["bundle_price_to_aov"] == pytest.approx(1.25)
    assert first["days_to_end"] == pytest.approx(0.5)
    assert first["days_since_start"] == pytest.approx(3.0)
    second = out.iloc[1]  # no history: missing (the defaults apply); an open end is capped
    assert np.isnan(second[[c for c in out.columns if c.startswith("user_")]]).all()
    assert np.isnan(second["bundle_price_to_aov"])  # a spend of 0 says nothing
    assert second["days_to_end"] == 365.0


def test_missing_values_read_the_same_in_every_pandas_form(store: Any) -> None:
    request_features.test_missing_values_read_the_same_in_every_pandas_form(store, VIEW)


def test_the_gateways_array_path_gives_the_dataframe_paths_values(store: Any) -> None:
    request_features.test_the_gateways_array_path_gives_the_dataframe_paths_values(store, VIEW)


def test_the_bundle_ranker_reads_bundle_stats_and_the_user(store: Any) -> None:
    contract = contract_from_store(store, "bundle_ranker_v1")
    refs = set(contract.refs)
    for ref in (
        "bundle_stats__all_in_stock",  # core.targets: the filters and the fallback order
        "bundle_stats__end_ts",
        "bundle_stats__main_category",
        "bundle_stats__purchases_30d",
        "bundle_stats__internal_copurchase",
        "bundle_stats__category_lift_mean",
        "bundle_stats__ctr_total",
        "bundle_stats__items_ctr_logit_mean",
        "bundle_stats__ctr_total_logit",
        "bundle_stats__ctr_eb_logit",
        "bundle_request_features__user_bundle_category_view_affinity_mean",
        "bundle_request_features__user_bundle_category_affinity_max",
        "user_behavior__ctr_30d",
    ):
        assert ref in refs, ref
    # Ids and raw codes mean nothing to a network: the model does not read them.
    raw = ("bundle_stats__bundle_item_", "bundle_stats__bundle_category_")
    assert not any(r.startswith(raw) for r in refs)
    activity = contract_from_store(store, "activity_ranker_v1")
    assert contract.schema_hash != activity.schema_hash
