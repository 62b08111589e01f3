"""Held-out rows, training rows and negatives: no leakage, reproducible, as documented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.evaluation import EvalProtocol, EvalTasks, build_tasks
from scoring.evaluation.protocol import timestamps_ns
from tests.evaluation.logs import T0, interactions, random_log


def keys(frame: pd.DataFrame) -> set[tuple[str, str, int]]:
    times = timestamps_ns(frame["timestamp"])
    return set(
        zip(frame["user_id"].astype(str), frame["item_id"].astype(str), times.tolist(), strict=True)
    )


@pytest.mark.parametrize("kind", ["loo", "time"])
def test_train_never_holds_a_held_out_row_nor_anything_after_it(kind: str) -> None:
    log = random_log()
    tasks = build_tasks(log, EvalProtocol(kind, max_users=None))  # type: ignore[arg-type]
    assert tasks.n_users > 300
    assert not keys(tasks.heldout) & keys(tasks.train)
    last_train = tasks.train.groupby(tasks.train["user_id"].astype(str))["timestamp"].max()
    held_at = tasks.heldout.set_index(tasks.heldout["user_id"].astype(str))["timestamp"]
    assert (last_train.reindex(held_at.index) < held_at).all()
    if kind == "time":
        assert tasks.cut is not None
        assert (tasks.train["timestamp"] < tasks.cut).all()
        assert (tasks.heldout["timestamp"] >= tasks.cut).all()
        assert len(tasks.train) == pytest.approx(0.8 * len(log), abs=5)
    # Every held-out row is a real interaction of the log.
    assert keys(tasks.heldout) <= keys(log)


def test_leave_one_out_holds_out_each_users_last_episode() -> None:
    log = interactions(
        [
            ("a", "x", "purchase", 1),
            ("a", "y", "view", 2),
            ("a", "z", "view", 3),  # a's last episode: z viewed, carted, bought
            ("a", "z", "add_to_cart", 4),
            ("a", "z", "purchase", 5),
            ("b", "x", "view", 1),
            ("b", "y", "purchase", 2),
            ("b", "y", "purchase", 2),  # ties: log order
            ("b", "x", "purchase", 2),
            ("c", "y", "purchase", 6),  # one positive: skipped
            ("d", "p", "purchase", 7),
            ("d", "q", "purchase", 8),
        ]
    )
    tasks = build_tasks(log, EvalProtocol("loo", negatives=1))
    held = tasks.heldout.assign(user_id=tasks.heldout["user_id"].astype(str))
    assert held["user_id"].tolist() == ["a", "b", "d"]
    assert held["item_id"].astype(str).tolist() == ["z", "x", "q"]
    assert held["timestamp"].tolist() == [T0 + pd.Timedelta(hours=h) for h in (3, 2, 8)]
    # b's negative is not y, bought at the held-out time: a positive too.
    assert tasks.candidates[1].tolist() in (["x", "p"], ["x", "q"])
    # a keeps x and y; b keeps only what came strictly before its held-out time.
    train = tasks.train.assign(user_id=tasks.train["user_id"].astype(str))
    assert sorted(train.loc[train["user_id"] == "a", "item_id"].astype(str)) == ["x", "y"]
    assert train.loc[train["user_id"] == "b", "item_id"].astype(str).tolist() == ["x"]
    assert tasks.skipped == {"fewer than 2 positives at different times": 1}


@pytest.mark.parametrize("kind", ["loo", "time"])
def test_negatives_are_unseen_distinct_catalogue_items(kind: str) -> None:
    log = random_log()
    tasks = build_tasks(log, EvalProtocol(kind, negatives=50))  # type: ignore[arg-type]
    candidates = tasks.candidates
    assert candidates.shape == (tasks.n_users, 51)
    assert (candidates[:, 0] == tasks.heldout["item_id"].astype(str).to_numpy()).all()
    catalogue = set(tasks.train["item_id"].astype(str))
    seen = log.groupby(log["user_id"].astype(str))["item_id"].agg(lambda s: set(s.astype(str)))
    for user, row in zip(tasks.heldout["user_id"].astype(str), candidates, strict=True):
        negatives = set(row[1:])
        assert len(negatives) == 50
        assert negatives <= catalogue
        assert not negatives & (seen[user] | {row[0]})


def test_same_seed_same_negatives_other_seed_other_negatives() -> None:
    log = random_log()
    first = build_tasks(log, EvalProtocol("loo", seed=4, max_users=200))
    again = build_tasks(log.copy(), EvalProtocol("loo", seed=4, max_users=200))
    other = build_tasks(log, EvalProtocol("loo", seed=5, max_users=200))
    np.testing.assert_array_equal(first.candidates, again.candidates)
    assert first.digest() == again.digest()
    assert first.heldout["user_id"].tolist() == again.heldout["user_id"].tolist()
    assert first.digest() != other.digest()
    assert (first.candidates[:, 1:] != other.candidates[:, 1:]).any()


def test_max_users_is_a_seeded_sample() -> None:
    log = random_log()
    tasks = build_tasks(log, EvalProtocol("loo", max_users=100))
    assert tasks.n_users == 100
    assert tasks.heldout["user_id"].is_monotonic_increasing
    assert tasks.skipped["not in the seeded sample (max_users)"] > 0
    everyone = build_tasks(log, EvalProtocol("loo", max_users=None))
    assert set(tasks.heldout["user_id"].astype(str)) < set(everyone.heldout["user_id"].astype(str))


def test_an_item_never_seen_in_training_is_still_ranked() -> None:
    log = pd.concat(
        [random_log(users=200), interactions([("u0001", "brand_new", "purchase", 24 * 40)])],
        ignore_index=True,
    )
    tasks: EvalTasks = build_tasks(log, EvalProtocol("loo", max_users=None))
    held = tasks.heldout.set_index(tasks.heldout["user_id"].astype(str))["item_id"].astype(str)
    assert held["u0001"] == "brand_new"
    assert "brand_new" not in set(tasks.train["item_id"].astype(str))
    assert "brand_new" not in set(tasks.candidates[:, 1:].ravel())


def test_a_user_who_saw_most_of_the_catalogue_is_skipped() -> None:
    rows = [("greedy", f"i{i}", "view", i) for i in range(8)]
    rows += [(f"u{k}", f"i{k % 10}", "purchase", 20 + k) for k in range(20)]
    rows += [(f"u{k}", "i9", "view", 50 + k) for k in range(20)]
    rows.append(("greedy", "i9", "purchase", 99))
    tasks = build_tasks(interactions(rows), EvalProtocol("loo", negatives=3))
    assert "greedy" not in set(tasks.heldout["user_id"].astype(str))
    assert tasks.skipped["fewer than 3 unseen catalogue items"] == 1


def test_a_catalogue_smaller_than_k_is_refused_by_name() -> None:
    log = interactions([("a", "x", "purchase", 1), ("a", "y", "purchase", 2)])
    with pytest.raises(ValueError, match="catalogue has 1 items: 100 negatives"):
        build_tasks(log, EvalProtocol("loo"))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"kind": "random"}, "protocol kind 'random'"),
        ({"negatives": 0}, "negatives must be at least 1"),
        ({"max_users": 0}, "max_users must be at least 1"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_bad_protocols_are_refused_by_name(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        EvalProtocol(**kwargs)  # type: ignore[arg-type]
