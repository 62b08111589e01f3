"""The basket protocol: test baskets, carts, negatives and its baselines on hand-made logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.core.codes import item_codes
from scoring.core.targets import CART_CATEGORY_FIELDS, CART_ITEM_FIELDS, CART_SIZE_FIELD, CART_SLOTS
from scoring.evaluation import EvalProtocol, build_tasks, evaluate
from scoring.evaluation.baselines import (
    BASKET_BASELINES,
    CART_CO_OCCURRENCE,
    MOST_BOUGHT,
    POPULARITY,
    fit_basket_baselines,
)
from scoring.evaluation.basket_protocol import BasketTasks, build_basket_tasks
from scoring.evaluation.report import markdown
from tests.evaluation.logs import T0

# Baskets of 2+ items: a's o1 (hour 1), b's o3 (2), a's o2 (5): half of them before the cut (2).
BASKET = EvalProtocol("basket", negatives=5, seed=0, max_users=None, test_fraction=0.5)


def orders(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    """(user, order, item, hours after T0) purchases as load_interactions returns them."""
    frame = pd.DataFrame(rows, columns=["user_id", "order_id", "item_id", "hours"])
    frame["timestamp"] = T0 + pd.to_timedelta(frame.pop("hours"), unit="h")
    frame["event_type"] = "purchase"
    frame["weight"] = np.float32(1.0)
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    return frame[["user_id", "item_id", "event_type", "timestamp", "weight", "order_id"]]


# The catalogue's other items, each bought alone by a user of its own (skipped: no basket).
FILLER = [(f"z{k:02d}", f"o-z{k}", f"f{k:02d}", 0.5) for k in range(12)]
LOG = orders(
    [
        *FILLER,
        ("a", "o1", "x", 1),
        ("a", "o1", "y", 1),
        ("a", "o2", "p", 5),  # a's test basket: p, q, r (hours 5-6)
        ("a", "o2", "q", 5),
        ("a", "o2", "r", 6),
        ("a", "o2", "p", 6),  # bought twice: one distinct item
        ("b", "o3", "x", 2),
        ("b", "o3", "x", 2),
        ("b", "o3", "y", 3),
        ("b", "o4", "q", 8),  # one item: o3 is b's test basket
        ("c", "o5", "y", 4),  # c has no basket of 2 items: skipped
    ]
)


def cart_items(tasks: BasketTasks, row: int) -> list[str]:
    return [c for c in tasks.cart_ids(np.array([row]))[0] if c]


def test_each_users_first_basket_after_the_cut_is_held_out_the_rest_is_its_cart() -> None:
    tasks = build_basket_tasks(LOG, BASKET)
    held = tasks.heldout.assign(user_id=tasks.heldout["user_id"].astype(str))
    assert held["user_id"].tolist() == ["a", "b"]
    a, b = 0, 1
    basket_a, basket_b = {"p", "q", "r"}, {"x", "y"}
    assert held["timestamp"].tolist()[:2] == [T0 + pd.Timedelta(hours=h) for h in (5, 2)]
    for row, basket in ((a, basket_a), (b, basket_b)):
        item = str(held["item_id"].iloc[row])
        cart = cart_items(tasks, row)
        assert item in basket and item not in cart
        assert set(cart) == basket - {item}
        assert tasks.cart_size[row] == len(basket) - 1
    assert tasks.skipped["no basket of 2 or more distinct items at or after the cut"] == 13
    # Only what came before the cut trains.
    assert tasks.cut == T0 + pd.Timedelta(hours=2)
    assert (tasks.train["timestamp"] < tasks.cut).all()
    train = tasks.train.assign(user_id=tasks.train["user_id"].astype(str))
    assert set(train.loc[train["user_id"] == "a", "item_id"].astype(str)) == {"x", "y"}
    assert not train["user_id"].isin(["b", "c"]).any()
    # Negatives: never an item of the basket; the user's other items may be one.
    ids = tasks.candidates
    for row, basket in ((a, basket_a), (b, basket_b)):
        assert ids[row, 0] == held["item_id"].iloc[row]
        assert not set(ids[row, 1:]) & basket
        assert len(set(ids[row, 1:])) == BASKET.negatives
    many = build_basket_tasks(
        LOG, EvalProtocol("basket", negatives=13, seed=0, max_users=None, test_fraction=0.5)
    )
    assert {"x", "y"} & set(many.candidates[a, 1:])  # 13 of the 14 training items


def test_the_scorer_frame_carries_the_cart_fields() -> None:
    categories = pd.Series({"p": 3.0, "q": 4.0, "x": 1.0})
    tasks = build_basket_tasks(LOG, BASKET, categories)
    frame = tasks.frame(np.array([0, 0]), tasks.candidate_codes[0, :2])
    cart = cart_items(tasks, 0)
    codes = frame[list(CART_ITEM_FIELDS)].to_numpy()
    assert codes[0, : len(cart)].tolist() == item_codes(np.array(cart, dtype=object)).tolist()
    assert (codes[:, len(cart) :] == -1).all()
    cats = frame[list(CART_CATEGORY_FIELDS)].to_numpy()[0, : len(cart)]
    assert cats.tolist() == [categories.get(c, -1.0) for c in cart]
    assert (frame[CART_SIZE_FIELD] == 2).all()
    assert len(CART_ITEM_FIELDS) == CART_SLOTS


def test_the_same_seed_gives_the_same_tasks_and_another_seed_other_negatives() -> None:
    log = _pairs_log()
    protocol = EvalProtocol("basket", negatives=20, seed=4, max_users=60)
    first, second = build_basket_tasks(log, protocol), build_basket_tasks(log, protocol)
    assert first.digest() == second.digest()
    assert (first.candidate_codes == second.candidate_codes).all()
    assert (first.cart == second.cart).all()
    other = build_basket_tasks(log, EvalProtocol("basket", negatives=20, seed=5, max_users=60))
    assert other.digest() != first.digest()
    assert first.n_users == 60 and "not in the seeded sample (max_users)" in first.skipped


def test_a_log_without_order_ids_makes_baskets_of_a_users_day() -> None:
    log = LOG.drop(columns=["order_id"])
    tasks = build_basket_tasks(log, BASKET)
    # A user's purchases of one UTC day are one basket: a's (hour 1) before the cut, b's
    # (hour 2, the cut) held out: x, y and q.
    held = tasks.heldout.assign(user_id=tasks.heldout["user_id"].astype(str))
    assert held["user_id"].tolist() == ["b"]
    assert set(cart_items(tasks, 0)) | {str(held["item_id"].iloc[0])} == {"x", "y", "q"}
    assert tasks.cart_size[0] == 2


def test_without_a_basket_of_two_items_the_protocol_says_why() -> None:
    log = orders([("a", "o1", "x", 1), ("b", "o2", "y", 2)])
    with pytest.raises(ValueError, match="no basket of 2 or more distinct purchased items"):
        build_basket_tasks(log, BASKET)
    with pytest.raises(ValueError, match="build_basket_tasks"):
        build_tasks(log, BASKET)


def _pairs_log(users: int = 200, pairs: int = 30, seed: int = 1) -> pd.DataFrame:
    """Items that go in pairs (a_k with b_k), and popular items bought alone by everyone.

    Each user buys a few pairs and popular items, then, last, a pair they never had: only
    what goes with the cart finds the held-out item.
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str, float]] = []
    for u in range(users):
        user = f"u{u:03d}"
        picked = rng.choice(pairs, 4, replace=False)
        for n, k in enumerate(picked[:3]):
            order, hour = f"{user}-{n}", float(n * 24 + rng.random())
            rows += [(user, order, f"a{k:02d}", hour), (user, order, f"b{k:02d}", hour)]
            rows += [(user, f"{order}-pop", f"pop{rng.integers(5)}", hour + 1)]
        k = picked[3]
        order, hour = f"{user}-last", 100.0 + rng.random()
        rows += [(user, order, f"a{k:02d}", hour), (user, order, f"b{k:02d}", hour)]
    return orders(rows)


def test_co_occurrence_with_the_cart_wins_where_items_go_in_pairs() -> None:
    log = _pairs_log()
    tasks = build_basket_tasks(log, EvalProtocol("basket", negatives=30, seed=0, max_users=None))
    assert tasks.n_users > 100 and (tasks.cart_size == 1).all()
    report = evaluate(tasks, fit_basket_baselines(tasks.train), BASKET_BASELINES)
    hr = {name: m["hr@10"] for name, m in report.metrics.items()}
    auc = {name: m["auc"] for name, m in report.metrics.items()}
    assert hr[CART_CO_OCCURRENCE] == 1.0 and auc[CART_CO_OCCURRENCE] > 0.99
    assert hr[POPULARITY] < 0.7 and hr[MOST_BOUGHT] < 0.7
    assert auc[CART_CO_OCCURRENCE] > max(auc[POPULARITY], auc[MOST_BOUGHT])
    text = markdown(report)
    assert "complete the basket" in text and "| MRR | AUC |" in text
    assert "Protocol: baskets are a user's purchases of one order" in text
