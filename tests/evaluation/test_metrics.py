"""Ranking metrics against hand-computed cases; evaluate() over real tasks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scoring.evaluation import EvalProtocol, EvalTasks, build_tasks, evaluate, ranking_metrics
from scoring.evaluation.metrics import ScorerError, ranks_from_scores
from tests.evaluation.logs import random_log


def test_metrics_of_hand_computed_ranks() -> None:
    ranks = np.array([0, 1, 9, 10, 19, 20])
    m = ranking_metrics(ranks)
    assert m["hr@10"] == pytest.approx(3 / 6)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(11)) / 6)
    assert m["recall@20"] == pytest.approx(5 / 6)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 20 + 1 / 21) / 6)


def test_ties_rank_the_held_out_item_last() -> None:
    # Column 0 is the held-out item. Row 0: two negatives tie with it, one is higher.
    scores = np.array([[0.5, 0.5, 0.9, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]])
    assert ranks_from_scores(scores).tolist() == [3, 4]
    constant = np.zeros((50, 101))
    assert ranking_metrics(ranks_from_scores(constant))["hr@10"] == 0.0
    valid = np.ones_like(scores, dtype=bool)
    valid[0, 2] = False  # a masked column never counts
    assert ranks_from_scores(scores, valid).tolist() == [2, 4]


def test_a_nan_score_counts_as_the_lowest() -> None:
    scores = np.array([[np.nan, 0.0, -1.0], [1.0, np.nan, 0.0]])
    assert ranks_from_scores(scores).tolist() == [2, 0]


@pytest.fixture(scope="module")
def tasks() -> EvalTasks:
    return build_tasks(random_log(), EvalProtocol("loo", max_users=None, full_catalogue=True))


def test_a_scorer_that_knows_the_answer_gets_every_metric_at_one(tasks: EvalTasks) -> None:
    held = tasks.heldout
    answer = dict(zip(held["user_id"].astype(str), held["item_id"].astype(str), strict=True))

    def oracle(frame: pd.DataFrame) -> np.ndarray:
        wanted = frame["user_id"].astype(str).map(answer)
        return (frame["item_id"].astype(str) == wanted).to_numpy(dtype=float)

    report = evaluate(tasks, {"oracle": oracle})
    assert report.metrics["oracle"] == dict.fromkeys(report.metrics["oracle"], 1.0)
    assert report.full_catalogue is not None
    assert report.full_catalogue["oracle"]["ndcg@10"] == 1.0


def test_a_random_scorer_hits_about_ten_in_a_hundred_and_one(tasks: EvalTasks) -> None:
    rng = np.random.default_rng(11)
    report = evaluate(tasks, {"random": lambda f: rng.random(len(f))})
    users = report.users
    assert users > 400
    sd = math.sqrt(10 / 101 * (91 / 101) / users)
    assert abs(report.metrics["random"]["hr@10"] - 10 / 101) < 4 * sd
    assert abs(report.metrics["random"]["recall@20"] - 20 / 101) < 4 * 2 * sd


def test_full_catalogue_ranks_among_unseen_items_only(tasks: EvalTasks) -> None:
    """A constant scorer ranks the held-out item below every item in its pool: the pool's size
    is the catalogue less what the user ever interacted with (and the held-out item itself)."""
    report = evaluate(tasks, {"constant": lambda f: np.zeros(len(f))})
    log = random_log()
    catalogue = set(tasks.train["item_id"].astype(str))
    seen = log.groupby("user_id")["item_id"].agg(set)
    held = tasks.heldout
    pools = [
        len(catalogue - seen[u] - {i})
        for u, i in zip(held["user_id"].astype(str), held["item_id"].astype(str), strict=True)
    ]
    assert report.full_catalogue is not None
    expected = ranking_metrics(np.array(pools))
    assert report.full_catalogue["constant"] == pytest.approx(expected)


def test_a_scorer_returning_the_wrong_number_of_scores_is_named(tasks: EvalTasks) -> None:
    with pytest.raises(ScorerError, match="short: returned 1 scores"):
        evaluate(tasks, {"short": lambda f: np.zeros(1)})
