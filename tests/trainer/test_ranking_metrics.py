"""Metric functions against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from scoring.trainer.ranking_metrics import (
    auc,
    best_f1_threshold,
    gauc,
    logloss,
    precision_recall_f1,
    ranking_metrics,
)


def test_auc_hand_computed() -> None:
    # Pairs (pos, neg): (0.8>0.3), (0.8>0.2), (0.4>0.3), (0.4>0.2) all right -> 1.0
    assert auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.3, 0.4, 0.2])) == 1.0
    # One of four pairs wrong -> 0.75
    assert auc(np.array([1, 0, 1, 0]), np.array([0.8, 0.5, 0.4, 0.2])) == 0.75
    # Ties count half: pos 0.5 vs neg 0.5 -> 0.5
    assert auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_auc_one_class_is_nan() -> None:
    assert math.isnan(auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_logloss_hand_computed() -> None:
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert math.isclose(logloss(np.array([1, 0]), np.array([0.8, 0.4])), expected)


@pytest.fixture
def random_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    users = rng.integers(0, 40, 600)
    probs = rng.uniform(0.01, 0.99, 600)
    labels = (rng.uniform(size=600) < probs * 0.6).astype(int)
    return labels, probs, users


def test_auc_and_logloss_match_sklearn(random_case: tuple[np.ndarray, ...]) -> None:
    labels, probs, _ = random_case
    rounded = np.round(probs, 1)  # plenty of ties
    assert math.isclose(auc(labels, rounded), skm.roc_auc_score(labels, rounded))
    assert math.isclose(logloss(labels, probs), skm.log_loss(labels, probs))


def test_precision_recall_f1_hand_computed_and_sklearn(random_case: tuple[np.ndarray, ...]) -> None:
    # predicted positive: 0.9, 0.6 (tp, fp); missed positive: 0.2 -> P 1/2, R 1/2, F1 1/2
    assert precision_recall_f1(np.array([1, 0, 1, 0]), np.array([0.9, 0.6, 0.2, 0.1]), 0.5) == (
        0.5,
        0.5,
        0.5,
    )
    labels, probs, _ = random_case
    p, r, f1 = precision_recall_f1(labels, probs, 0.4)
    sp, sr, sf, _ = skm.precision_recall_fscore_support(
        labels, probs >= 0.4, average="binary", zero_division=0
    )
    assert (p, r, f1) == pytest.approx((sp, sr, sf))


def test_best_f1_threshold_beats_every_other_cut(random_case: tuple[np.ndarray, ...]) -> None:
    labels, probs, _ = random_case
    best = precision_recall_f1(labels, probs, best_f1_threshold(labels, probs))[2]
    assert all(best >= precision_recall_f1(labels, probs, t)[2] - 1e-12 for t in probs)


def test_gauc_hand_computed() -> None:
    users = np.array(["a", "a", "a", "b", "b", "c"])
    labels = np.array([1, 0, 0, 1, 0, 1])
    scores = np.array([0.9, 0.5, 0.95, 0.1, 0.2, 0.3])
    # a: pos 0.9 beats 0.5, loses to 0.95 -> 0.5 (3 rows); b: 0.0 (2 rows); c: one class, left out
    assert gauc(labels, scores, users) == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)


def test_ranking_metrics_hand_computed() -> None:
    users = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 2)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.5, 0.4])
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 0, 0])  # c has no positive: left out
    out = ranking_metrics(labels, scores, users, ks=(1, 2))
    assert out["users"] == 2
    # a: positives at ranks 2 and 4; b: at rank 1.
    ndcg_a_2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert out["ndcg@2"] == pytest.approx((ndcg_a_2 + 1.0) / 2)
    assert out["ndcg@1"] == pytest.approx((0.0 + 1.0) / 2)
    assert out["recall@1"] == pytest.approx((0.0 + 1.0) / 2)
    assert out["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["hitrate@1"] == pytest.approx(0.5)
    assert out["hitrate@2"] == pytest.approx(1.0)


def test_ndcg_matches_sklearn_per_user(random_case: tuple[np.ndarray, ...]) -> None:
    labels, probs, users = random_case
    ours = ranking_metrics(labels, probs, users, ks=(10,))["ndcg@10"]
    per_user = [
        skm.ndcg_score([labels[users == u]], [probs[users == u]], k=10)
        for u in np.unique(users)
        if labels[users == u].any()
    ]
    assert ours == pytest.approx(np.mean(per_user))


def test_ranking_ties_are_broken_by_a_seeded_random_order() -> None:
    users = np.zeros(200, dtype=int)
    labels = np.r_[np.ones(20), np.zeros(180)]
    scores = np.zeros(200)  # all tied: no order may favour the positives listed first
    out = ranking_metrics(labels, scores, users, ks=(20,))
    assert out["recall@20"] < 0.5
    assert out == ranking_metrics(labels, scores, users, ks=(20,))
