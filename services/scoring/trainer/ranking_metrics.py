"""Evaluation metrics on numpy arrays: classification, per-user (grouped) and ranking metrics.

Ranking metrics treat each user's impressions in the evaluated window as that user's candidate
list, relevance = the label (clicked). Users without a positive are left out of NDCG, recall and
hit rate (nothing to find); GAUC uses users with both classes, weighted by their impressions.
Ties in a ranking are broken by a seeded random order, so no tie order can favour a method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the rank-sum statistic, ties averaged; NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities `probs`."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def gauc(labels: np.ndarray, scores: np.ndarray, users: np.ndarray) -> float:
    """Group AUC: per-user AUC averaged with impression weights over users with both classes."""
    frame = pd.DataFrame({"y": np.asarray(labels).astype(bool), "s": scores, "u": users})
    total, weight = 0.0, 0
    for _, g in frame.groupby("u", sort=False):
        n_pos = int(g["y"].sum())
        if 0 < n_pos < len(g):
            total += auc(g["y"].to_numpy(), g["s"].to_numpy()) * len(g)
            weight += len(g)
    return total / weight if weight else float("nan")


def precision_recall_f1(
    labels: np.ndarray, probs: np.ndarray, threshold: float
) -> tuple[float, float, float]:
    """Precision, recall and F1 of `probs >= threshold` (0 where undefined, as scikit-learn)."""
    y = np.asarray(labels).astype(bool)
    predicted = np.asarray(probs) >= threshold
    tp = int((y & predicted).sum())
    precision = tp / int(predicted.sum()) if predicted.any() else 0.0
    recall = tp / int(y.sum()) if y.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def best_f1_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The threshold that maximises F1 on (training) rows; use it on the test rows."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")
    y = np.asarray(labels).astype(bool)[order]
    p = np.asarray(probs, dtype=np.float64)[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(y) + 1)
    f1 = 2 * tp / (k + max(int(y.sum()), 1))
    last_of_tie = np.r_[p[1:] != p[:-1], True]
    best = int(np.argmax(np.where(last_of_tie, f1, -1.0)))
    return float(p[best])


def ranking_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    users: np.ndarray,
    ks: tuple[int, ...] = (10, 20),
    seed: int = 0,
) -> dict[str, float]:
    """Per-user NDCG@k, Recall@k and HitRate@k (binary relevance), averaged over users.

    Returns:
        Keys `ndcg@k`, `recall@k`, `hitrate@k` for each k, and `users` (users with a positive).
    """
    y = np.asarray(labels, dtype=np.float64)
    tiebreak = np.random.default_rng(seed).permutation(len(y))
    frame = pd.DataFrame({"u": users, "s": np.asarray(scores, dtype=np.float64), "t": tiebreak})
    frame["y"] = y
    frame = frame.sort_values(["u", "s", "t"], ascending=[True, False, True], kind="stable")
    frame["pos"] = frame.groupby("u", sort=False).cumcount()
    positives = frame.groupby("u", sort=False)["y"].sum()
    keep = positives[positives > 0].index
    frame = frame[frame["u"].isin(keep)]
    out: dict[str, float] = {"users": float(len(keep))}
    if not len(keep):
        return {**out, **{f"{m}@{k}": float("nan") for k in ks for m in ("ndcg", "recall")}}
    n_pos = positives.loc[keep]
    gain = frame["y"] / np.log2(frame["pos"] + 2.0)
    for k in ks:
        top = frame["pos"] < k
        dcg = gain[top].groupby(frame.loc[top, "u"]).sum().reindex(keep, fill_value=0.0)
        ideal_n = np.minimum(n_pos.to_numpy(), k).astype(int)
        discounts = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
        idcg = discounts[ideal_n - 1]
        hits = frame.loc[top, "y"].groupby(frame.loc[top, "u"]).sum().reindex(keep, fill_value=0)
        out[f"ndcg@{k}"] = float(np.mean(dcg.to_numpy() / idcg))
        out[f"recall@{k}"] = float(np.mean(hits.to_numpy() / n_pos.to_numpy()))
        out[f"hitrate@{k}"] = float(np.mean(hits.to_numpy() > 0))
    return out
