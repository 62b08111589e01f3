"""Each baseline on a tiny hand-made log, against its definition computed independently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.evaluation import EvalProtocol, build_tasks, evaluate
from scoring.evaluation.baselines import (
    BASELINES,
    CO_OCCURRENCE,
    MOST_BOUGHT,
    POPULARITY,
    RECENT,
    Baselines,
    fit_baselines,
)
from tests.evaluation.logs import T0, interactions, random_log

DAY = 24
TRAIN = interactions(
    [
        ("u1", "x", "purchase", 0),
        ("u1", "x", "purchase", 1),
        ("u1", "y", "view", 50 * DAY),
        ("u2", "x", "view", 2),
        ("u2", "z", "purchase", 98 * DAY),
        ("u3", "y", "purchase", 50 * DAY),
        ("u3", "z", "add_to_cart", 99 * DAY),
        ("u4", "x", "purchase", 3),
        ("u4", "y", "purchase", 4),
        ("u4", "w", "view", 5),
    ]
)


def ask(users: list[str], items: list[str], day: float = 100) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": T0 + pd.Timedelta(hours=day * DAY),
        }
    )


def order(scores: np.ndarray, items: list[str]) -> list[str]:
    return [items[i] for i in np.argsort(-scores, kind="stable")]


@pytest.fixture(scope="module")
def fitted() -> Baselines:
    return Baselines(TRAIN)


def test_popularity_is_the_weighted_count(fitted: Baselines) -> None:
    items = ["w", "x", "y", "z", "never_seen"]
    scores = fitted.score_popularity(ask(["u1"] * 5, items))
    assert scores.tolist() == pytest.approx([0.3, 3.3, 2.3, 1.7, 0.0])


def test_recent_popularity_counts_the_window_before_the_rows_time(fitted: Baselines) -> None:
    # The training span is 99 days: the window is 7 days. At day 100 only z is recent, and the
    # others follow by all-time popularity; at day 51 only y is.
    items = ["w", "x", "y", "z"]
    late = fitted.score_recent(ask(["u1"] * 4, items, day=100))
    assert late[3] == pytest.approx(1.7)
    assert order(late, items) == ["z", "x", "y", "w"]
    mid = fitted.score_recent(ask(["u1"] * 4, items, day=51))
    assert mid[2] == pytest.approx(1.3)
    assert order(mid, items) == ["y", "x", "z", "w"]
    # After the end of training, the window stays at the end of training.
    assert fitted.score_recent(ask(["u1"], ["z"], day=400)) == pytest.approx(late[3:])


def test_most_bought_is_the_users_own_count_then_popularity(fitted: Baselines) -> None:
    items = ["w", "x", "y", "z"]
    scores = fitted.score_most_bought(ask(["u1"] * 4, items))
    assert scores[1] == pytest.approx(2.0) and scores[2] == pytest.approx(0.3)
    assert order(scores, items) == ["x", "y", "z", "w"]
    # A user unknown to training: popularity alone.
    assert order(fitted.score_most_bought(ask(["new"] * 4, items)), items) == ["x", "y", "z", "w"]


def cosine_scores(train: pd.DataFrame, rows: pd.Series, user: str, items: list[str]) -> list[float]:
    """The definition, densely: cosine co-occurrence over rows (users or baskets), summed over
    the user's history items."""
    x = pd.crosstab(rows, train["item_id"].astype(str)).clip(upper=1).astype(float)
    c = x.T @ x
    n = np.diag(c.to_numpy()).copy()
    c = c / np.sqrt(np.outer(n, n))
    np.fill_diagonal(c.to_numpy(), 0.0)
    history = set(train.loc[train["user_id"] == user, "item_id"].astype(str))
    return [float(c.loc[sorted(history), i].sum()) if i in c else 0.0 for i in items]


def test_co_occurrence_sums_cosine_co_counts_over_the_users_history(fitted: Baselines) -> None:
    items = ["w", "x", "y", "z", "never_seen"]
    for user in ("u1", "u2", "u3", "u4"):
        scores = fitted.score_co_occurrence(ask([user] * 5, items))
        expected = cosine_scores(TRAIN, TRAIN["user_id"], user, items)
        assert scores == pytest.approx(expected, abs=1e-6)
    # A user with no history ties everywhere: the more popular item first.
    scores = fitted.score_co_occurrence(ask(["new"] * 4, items[:4]))
    assert order(scores, items[:4]) == ["x", "y", "z", "w"]


def test_co_occurrence_uses_baskets_when_the_log_has_orders() -> None:
    train = TRAIN.assign(order_id=["o1", "o1", "o2", "o3", "o4", "o5", "o5", "o6", "o6", "o7"])
    fitted = Baselines(train)
    items = ["w", "x", "y", "z"]
    for user in ("u1", "u3", "u4"):
        scores = fitted.score_co_occurrence(ask([user] * 4, items))
        expected = cosine_scores(train, train["order_id"], user, items)
        assert scores == pytest.approx(expected, abs=1e-6)
    # u1 bought x and y in different orders: they no longer co-occur through u1.
    assert (
        fitted.score_co_occurrence(ask(["u1"], ["y"]))[0]
        < Baselines(TRAIN).score_co_occurrence(ask(["u1"], ["y"]))[0]
    )


def test_rows_without_an_order_id_form_their_users_basket() -> None:
    items = ["w", "x", "y", "z"]
    by_user = Baselines(TRAIN)
    for empty in ("", None):
        fitted = Baselines(TRAIN.assign(order_id=empty))
        for user in ("u1", "u4"):
            frame = ask([user] * 4, items)
            assert fitted.score_co_occurrence(frame) == pytest.approx(
                by_user.score_co_occurrence(frame)
            )


def test_baselines_learn_only_from_training_rows() -> None:
    tasks = build_tasks(random_log(), EvalProtocol("loo", max_users=None))
    scorers = fit_baselines(tasks.train)
    assert list(scorers) == list(BASELINES)
    held = tasks.heldout
    popularity = scorers[POPULARITY](held)
    counts = tasks.train.groupby(tasks.train["item_id"].astype(str), observed=True)["weight"].sum()
    expected = counts.reindex(held["item_id"].astype(str)).fillna(0.0).to_numpy()
    assert popularity == pytest.approx(expected, rel=1e-6, abs=1e-6)
    report = evaluate(tasks, scorers, BASELINES)
    assert report.baselines == list(BASELINES)
    for name in (POPULARITY, RECENT, MOST_BOUGHT, CO_OCCURRENCE):
        assert 0.0 < report.metrics[name]["hr@10"] < 1.0
