"""Time-split evaluation of a model against baselines and, on synthetic data, the oracle.

Rows of the table (all scored on the same test impressions):
- model: the trained model's click probability;
- oracle: the data generator's true click probability (synthetic data only), the ceiling;
- popularity: the candidate's click count in the training window;
- user_top_category: 1 when the candidate's category is the user's most-clicked category in
  the training window, ties broken by popularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.core.contract import FeatureContract
from scoring.trainer.layout import CATEGORICAL_DTYPES
from scoring.trainer.ranking_metrics import (
    auc,
    gauc,
    logloss,
    precision_recall_f1,
    ranking_metrics,
)

USER = "user_id"
METRICS = (
    "auc",
    "gauc",
    "logloss",
    "ndcg@10",
    "recall@10",
    "recall@20",
    "hitrate@10",
    "precision",
    "recall",
    "f1",
)


@dataclass(frozen=True, slots=True)
class Scored:
    """One method's test scores; `probabilities` says whether logloss/threshold metrics apply."""

    name: str
    scores: np.ndarray
    probabilities: bool


def category_ref(contract: FeatureContract, candidate_entity: str) -> str | None:
    """The candidate's category feature (a categorical feature of its entity named *category*)."""
    for f in contract.features:
        if f.entity == candidate_entity and "category" in f.name and f.dtype in CATEGORICAL_DTYPES:
            return f.ref
    return None


def popularity(train: pd.DataFrame, test: pd.DataFrame, label: str, key: str) -> np.ndarray:
    """Training-window click count of each test candidate (0 for candidates never seen)."""
    clicks = train.groupby(key)[label].sum()
    return np.asarray(test[key].map(clicks).fillna(0.0), dtype=np.float64)


def user_top_category(
    train: pd.DataFrame, test: pd.DataFrame, label: str, key: str, category: str
) -> np.ndarray:
    """1 + popularity share when the candidate is in the user's most-clicked training category."""
    clicked = train[(train[label] == 1) & train[category].notna()]
    counts = clicked.groupby([USER, category]).size().rename("n").reset_index()
    counts = counts.sort_values([USER, "n", category], ascending=[True, False, True])
    first = counts.drop_duplicates(USER)
    top = pd.Series(first[category].to_numpy(), index=first[USER].to_numpy())
    match = (test[USER].map(top) == test[category]).to_numpy(dtype=np.float64)
    pop = popularity(train, test, label, key)
    return np.asarray(match + pop / (pop.max() + 1.0), dtype=np.float64)


def evaluate_scores(
    labels: np.ndarray,
    users: np.ndarray,
    methods: list[Scored],
    threshold: float,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Every metric of every method on the same rows: {method: {metric: value}}."""
    table: dict[str, dict[str, float]] = {}
    for m in methods:
        row = {"auc": auc(labels, m.scores), "gauc": gauc(labels, m.scores, users)}
        ranking = ranking_metrics(labels, m.scores, users, ks=(10, 20), seed=seed)
        row.update({k: ranking[k] for k in ("ndcg@10", "recall@10", "recall@20", "hitrate@10")})
        if m.probabilities:
            row["logloss"] = logloss(labels, m.scores)
            p, r, f1 = precision_recall_f1(labels, m.scores, threshold)
            row.update({"precision": p, "recall": r, "f1": f1})
        else:
            row.update({k: float("nan") for k in ("logloss", "precision", "recall", "f1")})
        table[m.name] = {k: row[k] for k in METRICS}
    return table
