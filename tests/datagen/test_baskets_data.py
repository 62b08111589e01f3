"""Baskets and bundles in the data: order_id, bundle_id, the bundles table, the basket oracle."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.datagen import dataset
from scoring.datagen.events import EventLog, bundle_items
from scoring.datagen.importer import ImportValidationError, read_event_log
from scoring.datagen.synthetic import (
    CATEGORIES,
    COMPLEMENT,
    IN_CART_LOGIT,
    SyntheticConfig,
    _BasketSampler,
    basket_oracle_logit,
    generate,
)
from scoring.trainer.ranking_metrics import auc

END = datetime(2026, 3, 1, tzinfo=UTC)
CFG = SyntheticConfig(300, 200, 12, 8000, 4000, days=21, organic_per_user=20, end=END)

EVENTS = """user_id,item_id,event_type,timestamp,price,quantity,order_id,bundle_id
u1,sku1,add_to_cart,2026-02-01T10:00:00Z,,,o1,
u1,sku1,purchase,2026-02-01T10:05:00Z,19.99,1,o1,
u1,sku2,purchase,2026-02-01T10:05:10Z,5.00,1,o1,
u2,sku2,purchase,2026-02-01T11:00:00Z,5.00,1,o2,
u2,,impression,2026-02-01T12:00:00Z,,,,b1
u2,,click,2026-02-01T12:00:30Z,,,,b1
u2,,purchase,2026-02-01T12:10:00Z,21.00,1,o3,b1
u3,sku1,view,2026-02-01T13:00:00Z,,,,
"""
ITEMS = "item_id,category,price\nsku1,phones,19.99\nsku2,headphones,5\nsku3,bags,\n"
BUNDLES = (
    "bundle_id,items,bundle_price,name,start_at,end_at\n"
    "b1,sku1|sku2,21,phone + headset,2026-01-01,\n"
    "b2,sku2| sku1 |sku2,,,,2026-03-01\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def log() -> EventLog:
    return generate(CFG)


def _oracle(items: pd.DataFrame, cart: list[str], candidates: np.ndarray) -> np.ndarray:
    carts = np.array([cart] * len(candidates), dtype=object)
    return basket_oracle_logit(items, carts, candidates)


def test_the_oracle_is_a_probability_over_the_catalogue(log: EventLog) -> None:
    items = log.items
    ids = items["item_id"].to_numpy()
    for cart in (["i_000001", "", ""], ["i_000003", "i_000010", "i_000003"], ["", "", ""]):
        logit = _oracle(items, cart, ids)
        p = 1 / (1 + np.exp(-logit))
        assert p.sum() == pytest.approx(1.0, abs=1e-6)
        assert (logit[np.isin(ids, cart)] == IN_CART_LOGIT).all()
    assert np.isnan(_oracle(items, ["i_000001"], np.array(["no-such-item"]))[0])


def test_the_generator_draws_additions_with_the_oracles_probabilities(log: EventLog) -> None:
    """The sampler behind the baskets (and bundles) is the oracle's distribution: 200,000
    draws after a two-item cart land on each item as often as the oracle says."""
    items = log.items
    category = pd.Categorical(items["category"], categories=list(CATEGORIES)).codes
    brand = pd.factorize(items["brand"])[0]
    appeal = items["oracle_appeal"].to_numpy()
    sampler = _BasketSampler(
        category.astype(np.int64), brand.astype(np.int64), appeal, np.zeros(len(items))
    )
    cart = ["i_000004", "i_000007"]
    n = 200_000
    drawn = sampler.draw(np.random.default_rng(0), np.tile(np.array([[4, 7]]), (n, 1)), np.ones(n))
    seen = np.bincount(drawn, minlength=len(items)) / n
    logit = _oracle(items, cart, items["item_id"].to_numpy())
    expected = 1 / (1 + np.exp(-logit))
    expected[[4, 7]] = 0.0
    assert seen[[4, 7]].sum() == 0
    # Sampling noise alone leaves about 0.03 total variation here; a cart summed rather than
    # averaged, or an appeal weight off by a half, leaves more than 0.1.
    assert 0.5 * np.abs(seen - expected).sum() < 0.05


def test_every_purchase_is_an_order_of_one_user(log: EventLog) -> None:
    ev = log.events
    buys = ev[ev["event_type"] == "purchase"]
    assert (buys["order_id"] != "").all()
    orders = ev[ev["order_id"] != ""]
    assert (orders.groupby("order_id")["user_id"].nunique() == 1).all()
    assert set(orders["event_type"]) == {"add_to_cart", "purchase"}
    # Baskets add about a third to the item purchases, not a multiple of them.
    item_buys = buys[buys["item_id"] != ""]
    per_order = item_buys.groupby("order_id").size()
    extra = len(item_buys) / len(per_order) - 1
    assert 0.2 < extra < 0.45
    assert (per_order >= 2).mean() > 0.1 and per_order.max() <= 4


def test_items_and_campaign_events_do_not_change_with_baskets_and_bundles(
    log: EventLog,
) -> None:
    """Baskets and bundles draw from their own random streams."""
    bare = generate(
        dataclasses.replace(CFG, n_bundle_impressions=0, basket_extra_items=(1, 0, 0, 0))
    )
    ev = log.events
    extra = (ev["bundle_id"] != "") | (
        ev.duplicated("order_id", keep="first") & (ev["order_id"] != "")
    )
    # An order's first event is its anchor purchase; every later one is an addition.
    columns = ["user_id", "item_id", "event_type", "timestamp", "p_click", "activity_id"]
    pd.testing.assert_frame_equal(
        ev.loc[~extra, columns].reset_index(drop=True), bare.events[columns]
    )
    pd.testing.assert_frame_equal(log.items, bare.items)


def test_basket_additions_follow_complements_not_popularity(log: EventLog) -> None:
    """The held-out last item of each basket, among 50 random items: the oracle ranks it
    well, popularity (item purchases) hardly better than chance; most additions are of a
    category complementary to the order's first item."""
    ev, items = log.events, log.items
    buys = ev[(ev["event_type"] == "purchase") & (ev["item_id"] != "")]
    baskets = [g.tolist() for _, g in buys.groupby("order_id")["item_id"] if g.nunique() >= 2]
    assert len(baskets) > 100
    held = np.array([b[-1] for b in baskets], dtype=object)
    cart = np.array([(b[:-1] + ["", ""])[:3] for b in baskets], dtype=object)
    rng = np.random.default_rng(0)
    negatives = rng.choice(items["item_id"].to_numpy(), (len(baskets), 50))
    candidates = np.concatenate([held[:, None], negatives], axis=1)
    label = np.zeros(candidates.shape)
    label[:, 0] = 1
    oracle = basket_oracle_logit(
        items, np.repeat(cart, candidates.shape[1], axis=0), candidates.ravel()
    )
    sales = buys["item_id"].value_counts().reindex(candidates.ravel()).fillna(0).to_numpy()
    oracle_auc = auc(label.ravel(), oracle)
    popularity_auc = auc(label.ravel(), sales + rng.uniform(0, 1e-3, len(sales)))
    assert oracle_auc > 0.75 and oracle_auc > popularity_auc + 0.1
    codes = pd.Categorical(items["category"], list(CATEGORIES)).codes
    code = dict(zip(items["item_id"], codes, strict=True))
    complementary = [COMPLEMENT[code[b[0]], code[b[1]]] > 0 for b in baskets]
    assert np.mean(complementary) > 0.6


def test_bundles_are_discounted_complementary_sets_with_events(log: EventLog) -> None:
    bundles, ev, items = log.bundles, log.events, log.items.set_index("item_id")
    assert len(bundles) == CFG.n_bundles and bundles["bundle_id"].is_unique
    members = bundle_items(bundles)
    assert members.map(lambda ids: 2 <= len(set(ids)) == len(ids) <= 4).all()
    parts = members.map(lambda ids: items.loc[ids, "price"].sum())
    saving = 1 - bundles["bundle_price"] / parts
    assert saving.between(0.04, 0.31).all()
    in_stock = members.map(lambda ids: items.loc[ids, "in_stock"].min())
    assert 1 <= (in_stock == 0).sum() <= len(bundles) // 4  # a few show the stock filter
    assert (bundles["end_at"].isna() | (bundles["end_at"] > bundles["start_at"])).all()
    on = ev[ev["bundle_id"] != ""]
    assert (on["item_id"] == "").all() and (on["activity_id"] == "").all()
    assert set(on["bundle_id"]) <= set(bundles["bundle_id"])
    counts = on["event_type"].value_counts()
    assert counts["impression"] == pytest.approx(CFG.n_activity_impressions / 2, rel=0.3)
    assert counts["impression"] > counts["click"] > counts["purchase"] > 0
    shown = on[on["event_type"] == "impression"]
    assert shown["p_click"].between(0, 1).all() and (shown["p_purchase"] < shown["p_click"]).all()
    # An out-of-stock item: never bought as a bundle.
    short = set(bundles.loc[(in_stock == 0).to_numpy(), "bundle_id"])
    assert (shown.loc[shown["bundle_id"].isin(short), "p_purchase"] == 0).all()
    bought = on[on["event_type"] == "purchase"]
    assert (bought["order_id"] != "").all() and not bought["bundle_id"].isin(short).any()


def test_a_good_import_keeps_orders_bundle_events_and_the_bundles_table(
    tmp_path: Path,
) -> None:
    got = read_event_log(
        write(tmp_path / "events.csv", EVENTS),
        items=write(tmp_path / "items.csv", ITEMS),
        bundles=write(tmp_path / "bundles.csv", BUNDLES),
    )
    ev = got.events
    assert list(ev["order_id"]) == ["o1", "o1", "o1", "o2", "", "", "o3", ""]
    assert list(ev["bundle_id"]) == ["", "", "", "", "b1", "b1", "b1", ""]
    b = got.bundles
    assert list(b["bundle_id"]) == ["b1", "b2"]
    assert list(b["items"]) == ["sku1|sku2", "sku2|sku1"]  # stripped, each item once
    assert list(b["bundle_price"]) == [21.0, pytest.approx(24.99)]  # b2: its items' sum
    assert b["name"].iloc[0] == "phone + headset" and b["name"].iloc[1] is None
    assert b["start_at"].iloc[0] == pd.Timestamp("2026-01-01", tz="UTC")
    assert pd.isna(b["start_at"].iloc[1]) and pd.isna(b["end_at"].iloc[0])
    # Appending newer events keeps the tables; a side without the id columns gets "".
    newer = EventLog(
        pd.DataFrame(
            {
                "user_id": ["u4"],
                "item_id": ["sku3"],
                "event_type": ["view"],
                "timestamp": [pd.Timestamp("2026-02-02", tz="UTC")],
                "price": [np.nan],
                "quantity": [np.nan],
                "activity_id": [""],
            }
        ),
        bundles=b.iloc[[1]].assign(bundle_price=30.0),
    )
    both = got.append(newer)
    assert list(both.bundles["bundle_id"]) == ["b1", "b2"]
    assert both.bundles["bundle_price"].iloc[1] == 30.0
    assert both.events["order_id"].iloc[-1] == "" and both.events["bundle_id"].iloc[-1] == ""


def test_a_bad_bundles_table_is_reported_row_by_row(tmp_path: Path) -> None:
    bad = (
        "bundle_id,items,bundle_price,start_at,end_at\n"
        "b1,sku1|sku2,10,,\n"
        "b2,sku1,10,,\n"
        "b3,sku1|sku1,,,\n"
        "b4,sku1|nope|gone,5,,\n"
        "b5,sku1|sku2,-2,,\n"
        "b1,sku2|sku3,4,,\n"
        "b6,sku1|sku2,4,2026-02-02,2026-02-01\n"
    )
    events = "user_id,item_id,event_type,timestamp\nu1,sku1,view,2026-02-01\n"
    with pytest.raises(ImportValidationError) as info:
        read_event_log(
            write(tmp_path / "events.csv", events),
            items=write(tmp_path / "items.csv", ITEMS),
            bundles=write(tmp_path / "bundles.csv", bad),
        )
    assert info.value.problems == [
        "bundles.csv row 6 (line 7): bundle_id 'b1' appears twice",
        "bundles.csv row 2 (line 3): items 'sku1' must name at least 2 distinct item ids "
        '("i1|i2")',
        "bundles.csv row 3 (line 4): items 'sku1|sku1' must name at least 2 distinct item ids "
        '("i1|i2")',
        "bundles.csv row 5 (line 6): bundle_price '-2' must be a number >= 0",
        "bundles.csv row 7 (line 8): end_at '2026-02-01' must be after start_at",
        "bundles.csv row 4 (line 5): items 'sku1|nope|gone' names item(s) nope, gone not in "
        "the items table",
    ]


def test_orders_of_two_users_and_unknown_bundles_are_refused(tmp_path: Path) -> None:
    events = (
        "user_id,item_id,event_type,timestamp,order_id,bundle_id\n"
        "u1,sku1,purchase,2026-02-01T10:00:00Z,o1,\n"
        "u1,sku2,purchase,2026-02-01T10:00:00Z,o1,\n"
        "u2,sku2,purchase,2026-02-01T10:01:00Z,o1,\n"
        "u2,,click,2026-02-01T10:02:00Z,,b9\n"
        "u2,sku1,click,2026-02-01T10:03:00Z,,b1\n"
    )
    path = write(tmp_path / "events.csv", events)
    with pytest.raises(ImportValidationError) as info:
        read_event_log(path, bundles=write(tmp_path / "bundles.csv", BUNDLES))
    assert info.value.problems == [
        "events.csv row 5 (line 6): bundle_id 'b1' is an event on the bundle itself: its "
        "item_id and activity_id must be empty",
        "events.csv row 3 (line 4): order_id 'o1' belongs to user_id 'u1' (row 1), not 'u2'",
        "events.csv row 4 (line 5): bundle_id 'b9' is not in bundles.csv",
    ]
    alone = "user_id,item_id,event_type,timestamp,bundle_id\nu2,,click,2026-02-01,b1\n"
    with pytest.raises(ImportValidationError) as info:
        read_event_log(write(tmp_path / "alone.csv", alone))
    assert info.value.problems == [
        "alone.csv row 1 (line 2): bundle_id 'b1' is a bundle event, which needs a bundles "
        "table (--bundles)"
    ]


def test_the_items_oracle_is_written_for_synthetic_data_only(
    log: EventLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "build_tables", lambda *args, **kwargs: {})
    data = dataset.build_data_set(log, tmp_path / "synthetic")
    oracle = pd.read_parquet(tmp_path / "synthetic" / "item_oracle.parquet")
    assert list(oracle.columns) == ["item_id", "category", "brand", "oracle_appeal"]
    events = data.tables["events"]
    assert {"order_id", "bundle_id"} <= set(events.columns) and "p_click" not in events
    plain = EventLog(log.events, log.items.drop(columns="oracle_appeal"))
    dataset.build_data_set(plain, tmp_path / "imported")
    assert not (tmp_path / "imported" / "item_oracle.parquet").exists()


def test_a_parquet_bundles_table_may_list_its_items(tmp_path: Path) -> None:
    events = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": ["u1"],
            "item_id": [""],
            "event_type": ["click"],
            "timestamp": ["2026-02-01"],
            "bundle_id": ["b1"],
        }
    ).to_parquet(events)
    bundles = tmp_path / "bundles.parquet"
    pd.DataFrame({"bundle_id": ["b1"], "items": [["sku1", "sku2"]]}).to_parquet(bundles)
    got = read_event_log(events, bundles=bundles)
    assert list(got.bundles["items"]) == ["sku1|sku2"]
    assert got.bundles["bundle_price"].isna().all()  # no items table: no prices to add up
