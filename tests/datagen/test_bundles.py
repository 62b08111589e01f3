"""Bundle features (scoring.datagen.bundles): a tiny hand-made log with two bundles of four
items, values checked by hand; nothing at or after a row's time reaches it; a log without
bundles still builds, applies and materializes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.core import feature_repo
from scoring.core.codes import item_codes
from scoring.datagen.build import BuildOptions, build_tables, write_tables
from scoring.datagen.bundles import EB_MIN_BUNDLES, FAR_FUTURE, _eb_prior
from scoring.datagen.events import EventLog

from ..conftest import copy_feature_repo

DAY = 86_400
D0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())  # a UTC midnight


def at(days: float, hours: float = 0.0) -> int:
    return int(D0 + days * DAY + hours * 3600)


def event(
    user: str,
    kind: str,
    when: int,
    item: str = "",
    bundle: str = "",
    order: str = "",
    price: float = np.nan,
    p_click: float = np.nan,
) -> dict[str, object]:
    return {
        "user_id": user,
        "item_id": item,
        "event_type": kind,
        "timestamp": pd.Timestamp(when, unit="s", tz="UTC"),
        "price": price,
        "quantity": 1.0,
        "activity_id": "",
        "order_id": order,
        "bundle_id": bundle,
        "p_click": p_click,
        "p_purchase": p_click / 10,
    }


def tiny_log(extra: tuple[dict[str, object], ...] = (), bundles: bool = True) -> EventLog:
    items = pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4"],
            "category": ["phones", "headphones", "bags", "phones"],
            "brand": ["a", "b", "c", "a"],
            "price": [100.0, 50.0, 40.0, 20.0],
            "rating": [4.0, 5.0, np.nan, 3.0],
            "in_stock": [1, 1, 0, 1],
            "created_at": pd.to_datetime([at(-10)] * 4, unit="s", utc=True),
        }
    )
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"]})
    rows = [
        event("u3", "purchase", at(0, 5), "i3", order="o4", price=40.0),
        event("u1", "purchase", at(0, 12), "i1", order="o1", price=100.0),
        event("u1", "purchase", at(0, 12.1), "i2", order="o1", price=50.0),
        event("u2", "view", at(0, 13), "i4"),
        # b1 starts at day 1: shown, clicked and bought by u1.
        event("u1", "impression", at(1, 1), bundle="b1", p_click=0.3),
        event("u1", "click", at(1, 1.1), bundle="b1"),
        event("u1", "purchase", at(1, 2), bundle="b1", price=135.0),
        # Purchases without an order: u2's basket of the day.
        event("u2", "purchase", at(1, 3), "i2", price=50.0),
        event("u2", "purchase", at(1, 4), "i4", price=20.0),
        event("u2", "purchase", at(1, 12), "i1", order="o2", price=100.0),
        # Exactly at the day-2 snapshot: none of these may reach its row.
        event("u2", "impression", at(2), bundle="b1", p_click=0.2),
        event("u3", "purchase", at(2), "i1", order="o3", price=100.0),
        event("u3", "purchase", at(2), "i2", order="o3", price=50.0),
        event("u3", "impression", at(3, 12), bundle="b2", p_click=0.1),
        event("u3", "click", at(3, 12.2), bundle="b2"),
        event("u1", "view", at(4, 6), "i3"),
        *extra,
    ]
    events = pd.DataFrame(rows).sort_values("timestamp", kind="stable", ignore_index=True)
    table = pd.DataFrame(
        {
            "bundle_id": ["b1", "b2"],
            "items": ["i1|i2", "i3|i4"],
            "bundle_price": [135.0, np.nan],
            "name": ["phone kit", "bag and phone"],
            "start_at": pd.to_datetime([at(1), None], unit="s", utc=True),
            "end_at": pd.to_datetime([at(5), None], unit="s", utc=True),
        }
    )
    if not bundles:
        return EventLog(events.drop(columns="bundle_id"), items, users)
    return EventLog(events, items, users, bundles=table)


def build(log: EventLog, tmp: Path) -> dict[str, pd.DataFrame]:
    return build_tables(log, BuildOptions(tmp))


def row(stats: pd.DataFrame, bundle: str, when: int) -> pd.Series:
    mine = stats[
        (stats["bundle_id"] == bundle)
        & (stats["event_timestamp"] == pd.Timestamp(when, unit="s", tz="UTC"))
    ]
    assert len(mine) == 1, (bundle, when)
    return mine.iloc[0]


def pmi(n_ab: float, n_a: float, n_b: float, n: float) -> float:
    return float(np.log((n_ab + 1) / (n_a * n_b / n + 1)))


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    return build(tiny_log(), tmp_path_factory.mktemp("bundles"))


def test_a_bundle_row_holds_its_definition_and_its_items_as_of_the_snapshot(
    tables: dict[str, pd.DataFrame],
) -> None:
    stats = tables["bundle_stats"]
    b1 = row(stats, "b1", at(2))
    assert b1["n_items"] == 2 and b1["bundle_price"] == 135 and b1["parts_price"] == 150
    assert b1["price_ratio"] == pytest.approx(0.9) and b1["saving_pct"] == pytest.approx(0.1)
    assert b1["start_ts"] == at(1) and b1["end_ts"] == at(5)
    # Items sold before day 2: i1 in o1 and o2, i2 in o1 and u2's day basket.
    assert b1["items_sales_30d_min"] == 2 and b1["items_sales_30d_mean"] == 2
    assert b1["items_sales_7d_mean"] == 2 and b1["items_rating_mean"] == pytest.approx(4.5)
    assert b1["all_in_stock"] == 1 and b1["in_stock_share"] == 1
    assert b1["n_categories"] == 2
    # Baskets complete before day 2: o4 {i3}, o1 {i1, i2}, u2's day {i2, i4}, o2 {i1}.
    assert b1["internal_copurchase"] == pytest.approx(pmi(1, 2, 2, 4), abs=1e-6)
    # The same over categories: phones in o1, u2's day (i4) and o2, headphones in o1 and u2's
    # day, both in o1 and u2's day.
    assert b1["category_lift_mean"] == pytest.approx(pmi(2, 3, 2, 4), abs=1e-6)
    assert b1["same_category_share"] == 0
    # No item impressions yet: each item's CTR is the prior.
    assert b1["items_ctr_logit_mean"] == pytest.approx(np.log(0.05 / 0.95))
    # Its events before day 2: one impression, its click and a purchase (not the day-2 one).
    assert (b1["impressions_7d"], b1["clicks_7d"], b1["purchases_30d"]) == (1, 1, 1)
    assert b1["ctr_30d"] == pytest.approx((1 + 0.05 * 20) / (1 + 20))
    # All time, towards every bundle's CTR before the row (here its own: 1 of 1).
    assert (b1["impressions_total"], b1["clicks_total"], b1["ctr_total"]) == (1, 1, 1)
    codes = item_codes(np.array(["i1", "i2"], dtype=object))
    assert [b1["bundle_item_00"], b1["bundle_item_01"], b1["bundle_item_02"]] == [*codes, -1]
    # phones (i1) and headphones (i2) tie: the first item's category is the main one.
    assert b1["main_category"] == b1["bundle_category_00"] != b1["bundle_category_01"]
    assert b1["bundle_category_02"] == -1

    later = row(stats, "b1", at(3))  # o3 (day 2, 00:00) and the day-2 impression now count
    assert later["internal_copurchase"] == pytest.approx(pmi(2, 3, 3, 5), abs=1e-6)
    assert later["impressions_7d"] == 2 and later["items_sales_30d_min"] == 3
    assert later["ctr_total"] == pytest.approx((1 + 20 * 0.5) / (2 + 20))
    assert later["ctr_total_logit"] == pytest.approx(np.log(11 / 11), abs=1e-6)
    # Too few bundles shown to fit the traits' prior: every bundle's CTR stands in for it.
    assert later["ctr_prior_logit"] == pytest.approx(0.0, abs=1e-6)
    assert later["ctr_eb_logit"] == pytest.approx(np.log(51 / 51), abs=1e-6)


def test_a_bundle_with_an_unavailable_item_is_filtered_and_an_open_one_never_ends(
    tables: dict[str, pd.DataFrame],
) -> None:
    stats = tables["bundle_stats"]
    b2 = stats[stats["bundle_id"] == "b2"].sort_values("event_timestamp")
    first = b2.iloc[0]
    # No start: it appears with its first event (day 3, 12:00), its statistics still empty.
    assert first["event_timestamp"] == pd.Timestamp(at(3, 12), unit="s", tz="UTC")
    assert first["start_ts"] == at(3, 12) and first["end_ts"] == FAR_FUTURE
    assert first["impressions_7d"] == 0 and first["clicks_7d"] == 0
    # Not shown yet: every bundle's CTR before it (b1: 1 click of 2 impressions).
    assert first["impressions_total"] == 0 and first["ctr_total"] == pytest.approx(0.5)
    # bags (i3, 1 basket) and phones (i4, 4: o3 too) never in one of the 5 baskets before it.
    assert first["category_lift_mean"] == pytest.approx(pmi(0, 1, 4, 5), abs=1e-6)
    assert (b2["all_in_stock"] == 0).all() and (b2["in_stock_share"] == 0.5).all()
    # No bundle price: the sum of its parts.
    assert (b2["bundle_price"] == 60).all() and (b2["price_ratio"] == 1).all()
    # i3 and i4 never in one basket (o4 {i3}, u2's day {i2, i4}) of the 5 before day 3, 12:00.
    assert first["internal_copurchase"] == pytest.approx(pmi(0, 1, 1, 5), abs=1e-6)
    assert row(stats, "b2", at(4))["clicks_7d"] == 1
    # Rows: at creation, then at every full hour and at the log's end.
    b1 = stats[stats["bundle_id"] == "b1"]["event_timestamp"]
    assert b1.min() == pd.Timestamp(at(1), unit="s", tz="UTC")
    assert b1.is_monotonic_increasing and b1.is_unique
    assert (b1.diff().dropna() <= pd.Timedelta(hours=1)).all()
    assert row(stats, "b2", at(3, 13))["clicks_total"] == 1


def test_nothing_at_or_after_a_rows_time_reaches_it(
    tables: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    """Events added at day 3, 00:00 and later change no row stamped at or before it."""
    cut = at(3)
    extra = [
        event("u1", "impression", cut, bundle="b1", p_click=0.5),
        event("u1", "click", cut, bundle="b1"),
        event("u1", "purchase", cut, bundle="b1"),
        event("u2", "purchase", cut, "i1", order="o9", price=100.0),
        event("u2", "purchase", cut, "i2", order="o9", price=50.0),
        event("u3", "purchase", at(3, 1), "i4", order="o10", price=20.0),
        event("u3", "purchase", at(3, 1), "i3", order="o10", price=40.0),
    ]
    again = build(tiny_log(tuple(extra)), tmp_path)["bundle_stats"]
    stamp = pd.Timestamp(cut, unit="s", tz="UTC")
    before = tables["bundle_stats"]
    before = before[before["event_timestamp"] <= stamp].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        again[again["event_timestamp"] <= stamp].reset_index(drop=True), before
    )
    after = row(again, "b1", at(4))
    assert after["purchases_30d"] == row(tables["bundle_stats"], "b1", at(4))["purchases_30d"] + 1


def test_bundle_impressions_are_labelled_like_activity_ones(
    tables: dict[str, pd.DataFrame],
) -> None:
    labels = tables["impressions_bundle"]
    assert list(labels.columns) == [
        *tables["impressions_activity"].columns[:1], "bundle_id",
        *tables["impressions_activity"].columns[2:],
    ]  # fmt: skip
    assert labels["bundle_id"].tolist() == ["b1", "b1", "b2"]
    assert labels["clicked"].tolist() == [1, 0, 1]
    assert labels["purchased"].tolist() == [1, 0, 0]
    np.testing.assert_allclose(labels["p_click"], [0.3, 0.2, 0.1])
    assert labels["request_ts"].tolist() == [at(1, 1), at(2), at(3, 12)]


def test_a_log_without_bundles_builds_applies_and_materializes(tmp_path: Path) -> None:
    repo = copy_feature_repo(tmp_path / "features")
    log = tiny_log(bundles=False)
    assert log.bundles.empty and "bundle_id" not in log.events
    tables = build_tables(log, BuildOptions(repo / "data"))
    write_tables(tables, repo / "data")
    stats, labels = tables["bundle_stats"], tables["impressions_bundle"]
    assert stats.empty and labels.empty
    assert list(labels.columns) == ["user_id", "bundle_id", *tables["impressions_item"].columns[2:]]
    feature_repo.apply(repo)
    feature_repo.materialize(repo, end=log.end.to_pydatetime())
    store = feature_repo.open_store(repo)
    online = store.get_online_features(
        features=["bundle_stats:all_in_stock", "bundle_stats:end_ts"],
        entity_rows=[{"bundle_id": "b1"}],
    ).to_dict()
    assert online["all_in_stock"] == [None] and online["end_ts"] == [None]


def test_the_traits_prior_is_fitted_on_rows_at_or_before_the_row() -> None:
    """The prior of a row is fitted on the rows of its time (counts before it) or, with too
    few bundles shown then, the last fit before it; never on later rows."""
    rng = np.random.default_rng(0)
    nb = EB_MIN_BUNDLES * 3
    trait = rng.normal(size=nb)
    truth = -2.5 + 0.8 * trait
    imps = np.full(nb, 20_000.0)
    clicks = np.round(imps / (1 + np.exp(-truth)))
    fallback = np.full(3 * nb, -3.0)
    bt = np.repeat(np.array([10, 20, 30], dtype=np.int64), nb)
    shown = np.concatenate([np.zeros(nb), imps, np.zeros(nb)])
    clicked = np.concatenate([np.zeros(nb), clicks, np.zeros(nb)])
    traits = np.tile(trait, 3)[:, None]
    prior = _eb_prior(bt, traits, shown, clicked, fallback)
    assert (prior[:nb] == -3.0).all()  # nothing shown yet: the fallback
    np.testing.assert_allclose(prior[nb:], np.tile(truth, 2), atol=0.05)  # then the fit, kept
    # Later rows (other counts) change no earlier prior.
    changed = clicked.copy()
    changed[2 * nb :] = imps
    again = _eb_prior(bt, traits, np.concatenate([shown[: 2 * nb], imps]), changed, fallback)
    np.testing.assert_array_equal(again[: 2 * nb], prior[: 2 * nb])
