"""The trainer's point-in-time join answers what Feast's get_historical_features answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.core.contract import contract_from_store
from scoring.core.targets import TARGETS, USER_JOIN_KEY, CandidateKind
from scoring.trainer.asof_join import AsOfJoin, supports
from scoring.trainer.examples import TIMESTAMP, point_in_time_frame

from ..conftest import FeatureRepo


def _rows(repo: FeatureRepo, kind: CandidateKind, n: int, seed: int) -> pd.DataFrame:
    """Real impressions, plus random (user, candidate, time) rows over and around the log's
    span: before a user's first snapshot, between snapshots, on a snapshot's exact time, long
    after the last one (past short TTLs), and for a user and a candidate nobody knows."""
    rng = np.random.default_rng(seed)
    target = next(t for t in TARGETS.values() if t.kind is kind)
    impressions = repo.data.tables[f"impressions_{kind.value}"]
    real = impressions.sample(n, random_state=seed)[[USER_JOIN_KEY, target.join_key, TIMESTAMP]]
    users = impressions[USER_JOIN_KEY].unique()
    candidates = impressions[target.join_key].unique()
    start, end = real[TIMESTAMP].min(), real[TIMESTAMP].max()
    span = (end - start) + pd.Timedelta(days=20)
    random = pd.DataFrame(
        {
            USER_JOIN_KEY: rng.choice(users, n),
            target.join_key: rng.choice(candidates, n),
            TIMESTAMP: start - pd.Timedelta(days=5) + span * rng.random(n),
        }
    )
    on_snapshot = real.assign(**{TIMESTAMP: real[TIMESTAMP].dt.floor("D")})
    unknown = real.head(5).assign(**{USER_JOIN_KEY: "nobody", target.join_key: "nothing"})
    rows = pd.concat([real, random, on_snapshot, unknown], ignore_index=True)
    rows[TIMESTAMP] = pd.to_datetime(rows[TIMESTAMP], utc=True).dt.floor("s")
    rows["request_ts"] = rows[TIMESTAMP].astype("int64") // 10**9
    return rows


@pytest.mark.parametrize("kind", list(CandidateKind))
def test_the_join_gives_the_model_the_inputs_feast_gives(
    feature_repo_ready: FeatureRepo, kind: CandidateKind
) -> None:
    target = next(t for t in TARGETS.values() if t.kind is kind)
    store = feature_repo_ready.store()
    contract = contract_from_store(store, target.feature_service)
    assert supports(store, store.get_feature_service(contract.service))
    rows = _rows(feature_repo_ready, kind, 400, seed=3)

    ours = point_in_time_frame(store, target, contract, rows)
    feast = point_in_time_frame(store, target, contract, rows, engine="feast")

    keys = [USER_JOIN_KEY, target.join_key, TIMESTAMP]
    pd.testing.assert_frame_equal(ours[keys], feast[keys])
    a, b = contract.assemble(ours), contract.assemble(feast)
    np.testing.assert_allclose(a.matrix, b.matrix, rtol=1e-6, atol=1e-6)
    # The comparison covers both kinds of value: rows with features and rows without.
    view_columns = [r for r in contract.refs if not r.startswith(("item_request", "activity_req"))]
    found = ours[view_columns].notna()
    assert found.any(axis=1).mean() > 0.5
    assert (~found).any(axis=1).any()


def test_one_join_serves_many_calls_in_any_row_order(feature_repo_ready: FeatureRepo) -> None:
    target = TARGETS["item_ranker"]
    store = feature_repo_ready.store()
    contract = contract_from_store(store, target.feature_service)
    join = AsOfJoin(store, store.get_feature_service(contract.service))
    rows = _rows(feature_repo_ready, CandidateKind.ITEM, 200, seed=5)
    fields = [USER_JOIN_KEY, target.join_key, TIMESTAMP, *contract.request_fields]
    first = join(rows[fields], TIMESTAMP)
    shuffled = rows.sample(frac=1.0, random_state=1)
    again = join(shuffled[fields], TIMESTAMP)
    assert list(again.index) == list(shuffled.index)
    pd.testing.assert_frame_equal(again.loc[rows.index], first)
    # A row moved a month later reads later snapshots.
    later = rows.assign(**{TIMESTAMP: rows[TIMESTAMP] + pd.Timedelta(days=30)})
    moved = join(later[fields], TIMESTAMP)
    assert not moved.equals(first)


def test_a_join_limited_to_the_rows_entities_answers_the_same_and_refuses_others(
    feature_repo_ready: FeatureRepo,
) -> None:
    target = TARGETS["item_ranker"]
    store = feature_repo_ready.store()
    contract = contract_from_store(store, target.feature_service)
    service = store.get_feature_service(contract.service)
    rows = _rows(feature_repo_ready, CandidateKind.ITEM, 200, seed=7)
    fields = [USER_JOIN_KEY, target.join_key, TIMESTAMP, *contract.request_fields]
    some = rows[rows[USER_JOIN_KEY].isin(rows[USER_JOIN_KEY].unique()[:20])]
    limited = AsOfJoin(
        store,
        service,
        entities={
            USER_JOIN_KEY: some[USER_JOIN_KEY].unique(),
            target.join_key: some[target.join_key].unique(),
        },
    )
    everything = AsOfJoin(store, service)
    pd.testing.assert_frame_equal(
        limited(some[fields], TIMESTAMP), everything(some[fields], TIMESTAMP)
    )
    # A row of a user outside the set is refused, not answered from missing tables.
    outside = rows[~rows[USER_JOIN_KEY].isin(some[USER_JOIN_KEY])].head(3)
    with pytest.raises(ValueError):
        limited(outside[fields], TIMESTAMP)
