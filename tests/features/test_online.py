"""Online reads: TTL enforced at read time, feature age, defaults and missing indicators."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from scoring.core.targets import TARGETS
from scoring.gateway.feature_source import FeastFeatureSource, FeatureRequest

from ..gateway.helpers import AGE_ATTR, fetch, frame

ITEMS = ("i_000001", "i_000002", "i_000003")


@pytest.fixture(scope="module")
def source(feature_repo_ready: Any) -> FeastFeatureSource:
    return FeastFeatureSource(feature_repo_ready.path)


def read(source: FeastFeatureSource, user: str, ids: tuple[str, ...], now: float) -> Any:
    target = TARGETS["item_ranker"]
    contract = source.contract(target.feature_service)
    request = FeatureRequest(contract, target, user, ids, {"request_ts": int(now)})
    got = source.read_blocking(request, now=now)
    return contract, got, contract.assemble(frame(got))


def test_fresh_values_are_served_with_their_age(source: FeastFeatureSource) -> None:
    now = time.time()
    contract, got, assembled = read(source, "u_000007", ITEMS, now)
    assert not assembled.indicators[:, contract.refs.index("user_behavior__ctr_30d")].any()
    assert not assembled.indicators[:, contract.refs.index("item_stats__ctr_7d")].any()
    # Daily snapshots: behaviour and item statistics are at most about a day old.
    assert 0 < got.age_s["user_behavior"] < 2 * 86_400
    assert 0 < got.age_s["item_stats"] < 2 * 86_400
    assert got.expired == dict.fromkeys(got.expired, 0)


def test_values_older_than_the_view_ttl_are_missing_with_defaults(
    source: FeastFeatureSource,
) -> None:
    # Ten days later the 2-day views have expired; profile (365 d) and embedding (10 y) have not.
    later = time.time() + 10 * 86_400
    contract, got, assembled = read(source, "u_000007", ITEMS, later)
    col = {ref: i for i, ref in enumerate(contract.refs)}
    assert got.expired["user_behavior"] == len(ITEMS) and got.expired["item_stats"] == len(ITEMS)
    assert got.expired["user_profile"] == 0 and got.expired["item_embedding"] == 0
    assert got.age_s["user_behavior"] > 10 * 86_400
    for ref, default in (("user_behavior__ctr_30d", 0.05), ("item_stats__rating", 3.5)):
        assert assembled.indicators[:, col[ref]].all(), ref
        value_col = contract.value_columns.index(ref)
        np.testing.assert_allclose(assembled.matrix[:, value_col], default, rtol=1e-6)
    assert not assembled.indicators[:, col["user_profile__segment"]].any()
    assert not assembled.indicators[:, col["item_embedding__embedding"]].any()
    # Request-time features built on expired inputs are missing too (as in training).
    assert assembled.indicators[:, col["item_request_features__price_to_aov"]].all()
    assert not assembled.indicators[:, col["item_request_features__hour_of_day"]].any()


def test_unknown_entities_get_defaults_and_indicators(source: FeastFeatureSource) -> None:
    contract, got, assembled = read(source, "nobody", ("i_000001", "sku_never_seen"), time.time())
    user_cols = [i for i, f in enumerate(contract.features) if f.entity == "user"]
    item_cols = [i for i, f in enumerate(contract.features) if f.entity == "item"]
    assert assembled.indicators[:, user_cols].all()
    assert assembled.indicators[1, item_cols].all() and not assembled.indicators[0, item_cols].any()
    # The indicator columns are the model's last inputs: 1.0 exactly where defaults were used.
    np.testing.assert_array_equal(
        assembled.matrix[:, contract.value_width :], assembled.indicators.astype(np.float32)
    )
    assert "item_stats" in got.age_s  # from the known item only


def test_fetch_reports_age_and_matches_feast_when_fresh(
    source: FeastFeatureSource, feature_repo_ready: Any
) -> None:
    target = TARGETS["item_ranker"]
    contract = source.contract(target.feature_service)
    now = int(time.time())
    frame = fetch(source, contract, target, "u_000007", ITEMS, {"request_ts": now})
    assert set(frame.attrs[AGE_ATTR]) >= {"user_behavior", "item_stats", "item_embedding"}
    store = feature_repo_ready.store()
    rows = [{"user_id": "u_000007", "item_id": i, "request_ts": now} for i in ITEMS]
    feast = store.get_online_features(
        features=store.get_feature_service(target.feature_service),
        entity_rows=rows,
        full_feature_names=True,
    ).to_dict()
    np.testing.assert_array_equal(contract.assemble(frame).matrix, contract.assemble(feast).matrix)
