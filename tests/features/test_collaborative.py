"""Collaborative tables are point in time; the request-time view matches them to the candidate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scoring.datagen.build import snapshot_times
from scoring.datagen.collaborative import (
    RECENT_ITEMS,
    TABLES,
    Interactions,
    collaborative_tables,
    cooccurrence,
    fit_times,
    item_codes,
)
from scoring.datagen.factorization import ALSConfig, _solve, confidence

DAY = 86_400
WEIGHTS = {"view": 0.3, "click": 0.5, "add_to_cart": 0.7, "purchase": 1.0}
T0 = 1_700_000_000 - 1_700_000_000 % DAY


def random_log(seed: int = 0, users: int = 25, items: int = 40, events: int = 900) -> pd.DataFrame:
    """Events over 40 days, with repeats, baskets and an impression now and then."""
    rng = np.random.default_rng(seed)
    kinds = np.array([*WEIGHTS, "impression"])
    frame = pd.DataFrame(
        {
            "user_id": [f"u{k}" for k in rng.integers(0, users, events)],
            "item_id": [f"i{k}" for k in rng.zipf(1.6, events) % items],
            "event_type": kinds[rng.choice(5, events, p=[0.35, 0.2, 0.15, 0.2, 0.1])],
            "timestamp": T0 + np.sort(rng.integers(0, 40 * DAY, events)),
        }
    )
    frame["order_id"] = frame["user_id"] + "-" + (frame["timestamp"] // DAY).astype(str)
    return frame


def build(events: pd.DataFrame) -> tuple[dict[str, pd.DataFrame], np.ndarray]:
    t = events["timestamp"].to_numpy(dtype=np.int64)
    users = pd.Index(sorted(set(events["user_id"])))
    items = pd.Index(sorted(set(events["item_id"])))
    u = users.get_indexer(events["user_id"])
    i = items.get_indexer(events["item_id"])
    snaps = snapshot_times(t)
    x = Interactions.of(events, t, u, i, len(users), len(items))
    created = np.full(len(items), T0, dtype=np.int64)
    tables = collaborative_tables(x, users.to_numpy(object), items.to_numpy(object), created, snaps)
    return tables, snaps


def seconds(column: pd.Series) -> np.ndarray:
    return np.asarray(pd.to_datetime(column, utc=True).astype("int64") // 10**9)


def test_recent_items_are_the_last_distinct_items_before_each_snapshot() -> None:
    events = random_log()
    tables, _ = build(events)
    recent = tables["user_recent"]
    positives = events[events["event_type"] != "impression"].reset_index(drop=True)
    codes = dict(
        zip(sorted(set(events["item_id"])), item_codes(sorted(set(events["item_id"]))), strict=True)
    )
    assert len(recent) > 50
    for _, row in recent.iterrows():
        at = int(seconds(pd.Series([row["event_timestamp"]]))[0])
        mine = positives[(positives["user_id"] == row["user_id"]) & (positives["timestamp"] < at)]
        last = mine.groupby("item_id").apply(lambda g: g.index.max(), include_groups=False)
        order = last.sort_values(ascending=False).index[:RECENT_ITEMS]
        for slot, item in enumerate(order):
            done = mine[mine["item_id"] == item]
            assert row[f"recent_item_{slot:02d}"] == codes[item]
            assert row[f"recent_count_{slot:02d}"] == pytest.approx(
                done["event_type"].map(WEIGHTS).sum(), rel=1e-6
            )
            assert row[f"recent_purchases_{slot:02d}"] == (done["event_type"] == "purchase").sum()
            assert row[f"recent_last_ts_{slot:02d}"] == done["timestamp"].max()
        for slot in range(len(order), RECENT_ITEMS):
            assert np.isnan(row[f"recent_item_{slot:02d}"])
        # A row is written only at a snapshot after a day with new interactions.
        assert ((mine["timestamp"] >= at - DAY) & (mine["timestamp"] < at)).any()


@pytest.mark.parametrize("table", TABLES)
def test_no_snapshot_counts_a_later_event(table: str) -> None:
    """Rows stamped before a cut are the same whether or not the log goes on after it."""
    events = random_log(1)
    full, snaps = build(events)
    cut = int(fit_times(snaps)[2])  # a fit time, so some fits fall before it and some after
    before, short_snaps = build(events[events["timestamp"] < cut])
    last_short = int(short_snaps[-1])  # the shorter log's own end snapshot
    keys = ["user_id" if "user_id" in full[table] else "item_id", "event_timestamp"]

    def rows(frame: pd.DataFrame) -> pd.DataFrame:
        t = seconds(frame["event_timestamp"])
        kept = frame[(t < cut) & (t != last_short)]
        return kept.sort_values(keys, ignore_index=True)

    # Entities of the shorter log only: an item first bought after the cut still has its
    # creation row (its code, no neighbours) before it, in the longer log alone.
    known = set(before[table][keys[0]])
    expected = rows(full[table][full[table][keys[0]].isin(known)])
    got = rows(before[table])
    assert len(expected) > 10
    pd.testing.assert_frame_equal(got, expected)


def test_rows_carry_only_earlier_interactions() -> None:
    tables, _ = build(random_log(2))
    recent = tables["user_recent"]
    last_seen = recent.filter(like="recent_last_ts_").max(axis=1).to_numpy()
    assert (last_seen < seconds(recent["event_timestamp"])).all()
    for name, fit in (("user_mf", "user_mf_fit"), ("item_mf", "item_mf_fit")):
        assert (tables[name][fit].to_numpy() == seconds(tables[name]["event_timestamp"])).all()


def test_cooccurrence_is_cosine_over_baskets_without_the_item_itself() -> None:
    baskets = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 2, 0, 1, 1, 3, 0])
    neighbours, scores = cooccurrence(baskets, items, 4, 4, top=3)
    # Item 0 is in baskets {0, 1, 3}, item 1 in {0, 1, 2}: two shared, cosine 2/3.
    x = sp.csr_matrix((np.ones(len(items)), (baskets, items)), shape=(4, 4)).toarray()
    cosine = (x.T @ x) / np.sqrt(np.outer(x.sum(0), x.sum(0)))
    np.fill_diagonal(cosine, 0)
    for item in range(4):
        expected = [j for j in np.argsort(-cosine[item], kind="stable") if cosine[item, j] > 0]
        assert neighbours[item][: len(expected)].tolist() == expected[:3]
        np.testing.assert_allclose(
            scores[item][: len(expected)], cosine[item, expected][:3], rtol=1e-6
        )
    assert neighbours[3].tolist() == [1, -1, -1]  # item 3 only shares basket 2 with item 1


def test_als_steps_solve_the_normal_equations() -> None:
    """Enough conjugate-gradient steps reach the exact least-squares solution per user."""
    rng = np.random.default_rng(3)
    counts = sp.random(30, 20, density=0.2, random_state=4, format="csr") * 5
    cfg = ALSConfig(factors=6)
    conf = confidence(counts, cfg.alpha)
    items = rng.standard_normal((20, cfg.factors)).astype(np.float32)
    start = np.zeros((30, cfg.factors), dtype=np.float32)
    got = _solve(conf, start, items, cfg.reg, steps=cfg.factors + 4)
    dense = conf.toarray()
    for user in range(30):
        c = dense[user] + 1.0
        p = (dense[user] > 0).astype(float)
        a = items.T @ (c[:, None] * items) + cfg.reg * np.eye(cfg.factors)
        np.testing.assert_allclose(got[user], np.linalg.solve(a, items.T @ (c * p)), atol=2e-3)


# --- the request-time view -------------------------------------------------------------------

VIEW = "item_collaborative_features"


@pytest.fixture(scope="module")
def store(feature_repo_ready: Any) -> Any:
    return feature_repo_ready.store()


def view_inputs(store: Any) -> list[str]:
    odfv = store.get_on_demand_feature_view(VIEW)
    return [f.name for p in odfv.source_feature_view_projections.values() for f in p.features]


def blank(store: Any, rows: int) -> dict[str, np.ndarray]:
    return {name: np.full(rows, np.nan) for name in [*view_inputs(store), "request_ts"]}


def test_the_candidate_is_matched_against_the_users_history(store: Any) -> None:
    now = T0 + 30 * DAY
    x = blank(store, 4)
    x["request_ts"][:] = now
    x["item_code"][:] = [7.0, 9.0, 5.0, np.nan]  # in the history, not, no overlap, unknown
    for slot, (item, count, bought, ts) in enumerate(
        [(3.0, 2.0, 1.0, now - DAY), (7.0, 1.3, 1.0, now - 4 * DAY), (8.0, 0.3, 0.0, now - DAY)]
    ):
        x[f"recent_item_{slot:02d}"][:] = item
        x[f"recent_count_{slot:02d}"][:] = count
        x[f"recent_purchases_{slot:02d}"][:] = bought
        x[f"recent_last_ts_{slot:02d}"][:] = ts
    # Candidates' neighbours: 7 goes with 3 (0.5) and 8 (0.25); 9 with 3 (0.1); 5 with 6.
    for row, neighbours in enumerate([[(3.0, 0.5), (8.0, 0.25)], [(3.0, 0.1)], [(6.0, 0.9)]]):
        for slot, (item, score) in enumerate(neighbours):
            x[f"co_item_{slot:02d}"][row] = item
            x[f"co_score_{slot:02d}"][row] = score
    x["user_mf_fit"][:] = 100.0
    x["item_mf_fit"][:] = [100.0, 100.0, 99.0, 100.0]  # row 2: another fit
    for d in range(32):
        x[f"user_mf_{d:02d}"][:] = 1.0 if d == 0 else 0.0
        x[f"recent_mf_{d:02d}"][:] = 1.0 if d < 2 else 0.0
        x[f"item_mf_{d:02d}"][:] = 0.5 if d == 1 else 0.0
    out = store.get_on_demand_feature_view(VIEW).feature_transformation.udf(x)
    np.testing.assert_allclose(out["user_item_interactions"], [1.3, 0.0, 0.0, np.nan], rtol=1e-6)
    np.testing.assert_allclose(out["user_item_purchases"], [1.0, 0.0, 0.0, np.nan])
    np.testing.assert_allclose(out["user_item_days_since"], [4.0, np.nan, np.nan, np.nan])
    np.testing.assert_allclose(out["user_item_rank"], [1.0, np.nan, np.nan, np.nan])
    np.testing.assert_allclose(out["co_recent_sum"], [0.75, 0.1, 0.0, np.nan], rtol=1e-6)
    np.testing.assert_allclose(out["co_recent_max"], [0.5, 0.1, 0.0, np.nan], rtol=1e-6)
    # The latest day holds items 3 and 8.
    np.testing.assert_allclose(out["co_last_sum"], [0.75, 0.1, 0.0, np.nan], rtol=1e-6)
    np.testing.assert_allclose(out["mf_score"], [0.0, 0.0, np.nan, 0.0], atol=1e-7)
    cosine = 0.5 / (np.sqrt(2) * 0.5)
    np.testing.assert_allclose(
        out["mf_recent_similarity"], [cosine, cosine, np.nan, cosine], rtol=1e-6
    )


def test_a_user_without_history_gets_missing_values(store: Any) -> None:
    x = blank(store, 2)
    x["request_ts"][:] = T0
    x["item_code"][:] = 7.0
    out = store.get_on_demand_feature_view(VIEW).feature_transformation.udf(x)
    assert all(np.isnan(values).all() for values in out.values())


def test_the_gateways_array_path_gives_the_dataframe_paths_values(store: Any) -> None:
    """Bit-identical outputs from numpy columns (the gateway) and a DataFrame (Feast, training),
    and the gateway takes the array path for this view."""
    from scoring.gateway.read_plan import OnDemand

    odfv = store.get_on_demand_feature_view(VIEW)
    assert OnDemand.of(odfv).arrays
    rng = np.random.default_rng(5)
    rows = 300
    x = blank(store, rows)
    pool = rng.integers(0, 2**52, 60).astype(np.float64)
    for name in x:
        if name.startswith(("recent_item_", "co_item_")) or name == "item_code":
            x[name] = rng.choice(pool, rows)
        elif name.endswith("_fit"):
            x[name] = rng.choice([1.0, 2.0], rows)
        else:
            x[name] = rng.standard_normal(rows) * 3 + (T0 if "ts" in name else 0)
        x[name][rng.random(rows) < 0.1] = np.nan  # holes everywhere
    arrays = odfv.feature_transformation.udf(x)
    frame = odfv.feature_transformation.transform(pd.DataFrame(x))
    assert list(frame.columns) == list(arrays)
    for name, values in arrays.items():
        assert values.dtype == np.float32
        np.testing.assert_array_equal(frame[name].to_numpy(), values)
    assert 0 < np.isnan(frame.to_numpy()).mean() < 1
