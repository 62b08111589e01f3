"""Basket tables: co-purchase counts and smoothed PMI, complementary categories, point in time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.core.codes import item_codes
from scoring.datagen.baskets import (
    COMPLEMENTS,
    NEIGHBOURS,
    TABLES,
    Baskets,
    basket_tables,
    smoothed_pmi,
)
from scoring.datagen.build import snapshot_times
from scoring.datagen.collaborative import fit_times

DAY = 86_400
T0 = 1_700_000_000 - 1_700_000_000 % DAY


def purchases(*baskets: tuple[str, str, float, list[str]]) -> pd.DataFrame:
    """(order, user, day, items): the items bought a second apart from the day's 10:00."""
    rows = [
        {
            "user_id": user,
            "item_id": item,
            "event_type": "purchase",
            "timestamp": int(T0 + day * DAY + 10 * 3600 + k),
            "order_id": order,
        }
        for order, user, day, items in baskets
        for k, item in enumerate(items)
    ]
    return pd.DataFrame(rows)


def build(
    events: pd.DataFrame, categories: dict[str, int] | None = None
) -> tuple[dict[str, pd.DataFrame], Baskets, pd.Index]:
    t = events["timestamp"].to_numpy(dtype=np.int64)
    items = pd.Index(sorted(set(events["item_id"])))
    users = pd.Index(sorted(set(events["user_id"])))
    baskets = Baskets.of(
        events, t, users.get_indexer(events["user_id"]), items.get_indexer(events["item_id"]),
        len(items),
    )  # fmt: skip
    category = np.array([(categories or {}).get(i, -1) for i in items], dtype=np.int64)
    created = np.full(len(items), T0, dtype=np.int64)
    tables = basket_tables(baskets, items.to_numpy(object), category, created, snapshot_times(t))
    return tables, baskets, items


def seconds(column: pd.Series) -> np.ndarray:
    return np.asarray(pd.to_datetime(column, utc=True).astype("int64") // 10**9)


def last_row(table: pd.DataFrame, item: str) -> pd.Series:
    mine = table[table["item_id"] == item]
    return mine.loc[mine["event_timestamp"].idxmax()]


def neighbours(row: pd.Series) -> list[str]:
    return [row[f"cp_id_{k:02d}"] for k in range(NEIGHBOURS) if pd.notna(row[f"cp_id_{k:02d}"])]


def test_baskets_are_orders_else_a_users_day_each_item_at_its_first_purchase() -> None:
    events = purchases(("o1", "u1", 0, ["a", "b", "a"]), ("o2", "u1", 0, ["c"]))
    extra = pd.DataFrame(
        {
            "user_id": ["u2", "u2", "u2", "u2"],
            "item_id": ["a", "c", "b", "a"],
            "event_type": ["purchase", "purchase", "purchase", "view"],
            "timestamp": [T0 + DAY + 60, T0 + DAY + 7200, T0 + 2 * DAY + 5, T0 + DAY],
            "order_id": ["", "", "", ""],
        }
    )
    _, baskets, items = build(pd.concat([events, extra], ignore_index=True))
    groups = {frozenset(items[baskets.item[baskets.basket == b]]) for b in range(baskets.n_baskets)}
    # Two orders of one user on one day stay two baskets; u2's purchases of day 1 are one
    # basket, of day 2 another; a view is no purchase; an item bought twice counts once.
    assert groups == {frozenset("ab"), frozenset("c"), frozenset("ac"), frozenset("b")}
    assert baskets.n_baskets == 4 and len(baskets.item_t) == 6
    first_a = baskets.item_t[(baskets.item == items.get_loc("a")) & (baskets.item_t < T0 + DAY)]
    assert first_a.tolist() == [T0 + 10 * 3600]  # its first purchase in the order
    assert (np.diff(baskets.item_t) >= 0).all()
    # Each basket's last purchase, in basket order (o1's is its second a).
    o1 = baskets.basket[baskets.item == items.get_loc("b")][0]
    assert baskets.t[o1] == T0 + 10 * 3600 + 2
    assert baskets.t.tolist() == sorted(baskets.t.tolist())


def test_a_pair_seen_once_between_rare_items_does_not_top_the_list() -> None:
    # a and b are bought together again and again (b is popular too); a and r once, r is
    # bought nowhere else; plain PMI would rank r first. 100 baskets of other items.
    together = [(f"ab{k}", f"u{k}", k % 5, ["a", "b"]) for k in range(6)]
    b_alone = [(f"b{k}", f"v{k}", k % 5, ["b", f"x{k}"]) for k in range(10)]
    a_alone = [(f"a{k}", f"w{k}", k % 5, ["a", f"y{k}"]) for k in range(2)]
    once = ("ar", "z", 3, ["a", "r"])
    other = [(f"o{k}", f"o{k}", k % 5, [f"p{k % 7}", f"q{k % 11}"]) for k in range(100)]
    tables, baskets, _ = build(purchases(*together, *b_alone, *a_alone, once, *other))
    row = last_row(tables["item_copurchase"], "a")
    n = baskets.n_baskets
    assert neighbours(row)[0] == "b"
    assert row["basket_count"] == 9 and row["cp_count_00"] == 6
    np.testing.assert_allclose(row["cp_pmi_00"], smoothed_pmi(6, 9, 16, n), rtol=1e-6)
    r = neighbours(row).index("r")
    assert row[f"cp_count_{r:02d}"] == 1
    np.testing.assert_allclose(row[f"cp_pmi_{r:02d}"], smoothed_pmi(1, 9, 1, n), rtol=1e-6)
    # Plain PMI would have put r first; the smoothed one keeps a single basket near 0.
    assert np.log(1 * n / (9 * 1)) > np.log(6 * n / (9 * 16))
    assert row[f"cp_pmi_{r:02d}"] < np.log(2) < row["cp_pmi_00"]
    assert list(row[[f"cp_pmi_{k:02d}" for k in range(len(neighbours(row)))]]) == sorted(
        row[[f"cp_pmi_{k:02d}" for k in range(len(neighbours(row)))]], reverse=True
    )


def test_a_row_holds_only_what_was_bought_before_its_time() -> None:
    # Fits are weekly from the first midnight (T0): T0 + 7d, T0 + 14d, then the log's end.
    events = purchases(("o1", "u1", 0, ["a", "b"]), ("o9", "u2", 20, ["c", "d"]))
    at = T0 + 7 * DAY
    straddle = pd.DataFrame(
        {
            "user_id": ["u3", "u3", "u4", "u4"],
            "item_id": ["a", "c", "b", "d"],
            "event_type": ["purchase"] * 4,
            # o2 is bought across the fit; o3 exactly at the fit.
            "timestamp": [at - 60, at + 60, at, at],
            "order_id": ["o2", "o2", "o3", "o3"],
        }
    )
    tables, _, _ = build(pd.concat([events, straddle], ignore_index=True))
    cp = tables["item_copurchase"]
    times = seconds(cp["event_timestamp"])
    assert at in set(times)

    def row(item: str, time: int) -> pd.Series:
        return cp[(cp["item_id"] == item) & (times == time)].iloc[0]

    # At the fit: o1, and o2's item bought before it (no pair with c yet); o3 not at all.
    assert row("a", at)["basket_count"] == 2 and neighbours(row("a", at)) == ["b"]
    assert row("b", at)["basket_count"] == 1 and neighbours(row("b", at)) == ["a"]
    assert not (cp[times == at]["item_id"].isin(["c", "d"])).any()
    later = row("a", T0 + 14 * DAY)
    assert later["basket_count"] == 2 and sorted(neighbours(later)) == ["b", "c"]
    assert sorted(neighbours(row("b", T0 + 14 * DAY))) == ["a", "d"]  # o3 from then on


def random_log(seed: int, days: int = 70) -> pd.DataFrame:
    """Orders of 1-5 items (popular items more often), a few purchases without an order, some
    orders bought over two days (across a fit)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(400):
        user = f"u{rng.integers(0, 40)}"
        start = T0 + int(rng.integers(0, days * DAY))
        order = f"o{k}" if rng.random() < 0.9 else ""
        gap = 1800 if rng.random() < 0.8 or not order else DAY // 2
        for n, item in enumerate(rng.zipf(1.5, rng.integers(1, 6)) % 30):
            rows.append(
                {
                    "user_id": user,
                    "item_id": f"i{item:02d}",
                    "event_type": "purchase" if rng.random() < 0.95 else "view",
                    "timestamp": start + int(n * rng.integers(0, gap)),
                    "order_id": order,
                }
            )
    return pd.DataFrame(rows)


CATEGORIES = {f"i{k:02d}": k % 7 for k in range(30)}


def brute_baskets(events: pd.DataFrame) -> pd.DataFrame:
    """(basket, item_id, first): each distinct item of a basket at its first purchase in it."""
    bought = events[events["event_type"] == "purchase"].copy()
    day = bought["user_id"] + "@" + (bought["timestamp"] // DAY).astype(str)
    bought["basket"] = np.where(bought["order_id"] != "", "o:" + bought["order_id"], day)
    first = bought.groupby(["basket", "item_id"], as_index=False)["timestamp"].min()
    return first.rename(columns={"timestamp": "first"})


def test_counts_and_neighbours_match_a_brute_force_count() -> None:
    events = random_log(0)
    tables, _, _ = build(events, CATEGORIES)
    cp = tables["item_copurchase"]
    pairs = brute_baskets(events)
    rows = cp.sample(60, random_state=0)
    assert (rows["basket_count"] > 0).sum() > 30
    for _, row in rows.iterrows():
        at = int(seconds(pd.Series([row["event_timestamp"]]))[0])
        before = pairs[pairs["first"] < at]
        recent = before[before["first"] >= at - 30 * DAY]
        n = before["basket"].nunique()
        mine = set(before.loc[before["item_id"] == row["item_id"], "basket"])
        assert row["basket_count"] == len(mine)
        assert row["basket_count_30d"] == recent.loc[recent["item_id"] == row["item_id"]].shape[0]
        counts = before[before["basket"].isin(mine) & (before["item_id"] != row["item_id"])]
        together = counts["item_id"].value_counts()
        per_item = before["item_id"].value_counts()
        pmi = {j: float(smoothed_pmi(c, len(mine), per_item[j], n)) for j, c in together.items()}
        expected = sorted(pmi, key=lambda j: (-round(pmi[j], 9), -together[j], j))
        got = neighbours(row)
        assert got == expected[:NEIGHBOURS]
        recent_mine = set(recent.loc[recent["item_id"] == row["item_id"], "basket"])
        for k, j in enumerate(got):
            assert row[f"cp_count_{k:02d}"] == together[j]
            assert (
                row[f"cp_count_30d_{k:02d}"]
                == recent[recent["basket"].isin(recent_mine) & (recent["item_id"] == j)].shape[0]
            )
            np.testing.assert_allclose(row[f"cp_pmi_{k:02d}"], pmi[j], rtol=1e-5, atol=1e-6)
            assert row[f"cp_item_{k:02d}"] == item_codes(np.array([j], dtype=object))[0]


def test_category_complements_are_the_smoothed_lift_of_other_categories() -> None:
    events = random_log(1)
    tables, _, _ = build(events, CATEGORIES)
    cc = tables["category_complements"]
    pairs = brute_baskets(events)
    pairs["category"] = pairs["item_id"].map(CATEGORIES)
    per_basket = pairs.groupby(["basket", "category"], as_index=False)["first"].min()
    rows = cc[cc["cc_category_00"].notna()].sample(40, random_state=1)
    for _, row in rows.iterrows():
        at = int(seconds(pd.Series([row["event_timestamp"]]))[0])
        before = per_basket[per_basket["first"] < at]
        n = before["basket"].nunique()
        own = CATEGORIES[row["item_id"]]
        mine = set(before.loc[before["category"] == own, "basket"])
        together = before[before["basket"].isin(mine) & (before["category"] != own)]
        counts = together["category"].value_counts()
        per_category = before["category"].value_counts()
        lift = {c: float(smoothed_pmi(k, len(mine), per_category[c], n)) for c, k in counts.items()}
        expected = sorted(lift, key=lambda c: (-round(lift[c], 9), -counts[c], c))[:COMPLEMENTS]
        got = [int(row[f"cc_category_{k:02d}"]) for k in range(len(expected))]
        assert got == expected and own not in got
        for k, c in enumerate(got):
            np.testing.assert_allclose(row[f"cc_lift_{k:02d}"], lift[c], rtol=1e-5, atol=1e-6)
    # Every item of a seen category gets a row at every fit, bought or not.
    fits = sorted(set(seconds(cc["event_timestamp"])) - {T0})
    assert (cc.groupby("item_id").size() >= len(fits)).all()


@pytest.mark.parametrize("table", TABLES)
def test_no_row_counts_a_later_basket(table: str) -> None:
    """Rows stamped before a cut are the same whether or not the log goes on after it."""
    events = random_log(2)
    full, _, _ = build(events, CATEGORIES)
    t = events["timestamp"].to_numpy()
    cut = int(fit_times(snapshot_times(t))[3])
    short = events[events["timestamp"] < cut]
    before, _, _ = build(short, CATEGORIES)
    last_short = int(snapshot_times(short["timestamp"].to_numpy())[-1])

    def rows(frame: pd.DataFrame) -> pd.DataFrame:
        stamp = seconds(frame["event_timestamp"])
        kept = frame[(stamp < cut) & (stamp != last_short) & (stamp > T0)]
        return kept.sort_values(["item_id", "event_timestamp"], ignore_index=True)

    known = set(before[table]["item_id"])
    expected = rows(full[table][full[table]["item_id"].isin(known)])
    got = rows(before[table])
    assert len(expected) > 10
    pd.testing.assert_frame_equal(got, expected)
