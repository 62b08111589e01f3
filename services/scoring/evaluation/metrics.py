"""Ranking metrics over evaluation tasks: HR@10, NDCG@10, Recall@20 and MRR for each method
(and AUC under the basket protocol).

Each user has one held-out item. Its rank is the number of other candidates scored at least as
high: ties count against it (pessimistic), so a constant scorer ranks it last and gets no free
hits, and a NaN score counts as the lowest. With one relevant item per user, Recall@20 is the
share of users whose item ranks in the top 20 (HR@20).

Sampled: the candidates are the held-out item and its K negatives. Full catalogue: every item of
the training catalogue the user never interacted with, plus the held-out item (the same pool the
negatives come from), scored in chunks of users so that at most `ROWS_PER_CALL` rows go to a
scorer at once.

AUC (basket protocol, sampled candidates): per task, the share of its negatives scored below the
held-out item (ties count half), averaged over tasks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scoring.evaluation.protocol import EvalTasks

# Given rows (user_id, item_id: categoricals; timestamp: the held-out event's time, as of which
# features must be read), one score per row, higher = better.
Scorer = Callable[[pd.DataFrame], np.ndarray]
# Called with (method, users done, users in all).
EvalProgress = Callable[[str, int, int], None]

METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr")
AUC = "auc"
ROWS_PER_CALL = 1_000_000


class ScorerError(ValueError):
    """A scorer returned something other than one number per row."""


def ranks_from_scores(scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of column 0 in each row: how many other valid columns score >= it.

    Args:
        scores: [users, candidates], the held-out item's score in column 0.
        valid: which of the columns 1.. count (all by default).
    """
    scores = np.where(np.isnan(scores), -np.inf, scores)
    beaten = scores[:, 1:] >= scores[:, :1]
    if valid is not None:
        beaten &= valid[:, 1:]
    return np.asarray(beaten.sum(axis=1), dtype=np.int64)


def sampled_auc(scores: np.ndarray) -> np.ndarray:
    """Per row, the share of columns 1.. scored below column 0 (ties count half; NaN lowest)."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    below = (scores[:, 1:] < scores[:, :1]).mean(axis=1)
    tied = (scores[:, 1:] == scores[:, :1]).mean(axis=1)
    return np.asarray(below + 0.5 * tied, dtype=np.float64)


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    """HR@10, NDCG@10, Recall@20 and MRR (means over users) from 0-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return dict.fromkeys(METRICS, float("nan"))
    return {
        "hr@10": float(np.mean(ranks < 10)),
        "ndcg@10": float(np.mean(np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0))),
        "recall@20": float(np.mean(ranks < 20)),
        "mrr": float(np.mean(1.0 / (ranks + 1.0))),
    }


@dataclass
class EvalReport:
    """Every method's metrics on one set of tasks, with what is needed to reproduce them.

    Attributes:
        protocol: the protocol's description (EvalProtocol.describe()).
        users: users evaluated; skipped: users left out, by reason.
        digest: EvalTasks.digest() of the candidates (same digest, same negatives).
        metrics: method -> metric -> value, ranking among the sampled candidates.
        full_catalogue: the same over the full catalogue (when the protocol asks for it).
        baselines: which methods are baselines (the others are models).
        seconds: each method's scoring time.
        data: sizes and dates of the split (train rows, catalogue, held-out times).
    """

    protocol: dict[str, Any]
    users: int
    skipped: dict[str, int]
    digest: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    full_catalogue: dict[str, dict[str, float]] | None = None
    baselines: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "users": self.users,
            "skipped": self.skipped,
            "digest": self.digest,
            "metrics": self.metrics,
            "full_catalogue": self.full_catalogue,
            "baselines": self.baselines,
            "seconds": self.seconds,
            "data": self.data,
        }


def _call(scorer: Scorer, name: str, frame: pd.DataFrame) -> np.ndarray:
    scores = np.asarray(scorer(frame), dtype=np.float64).reshape(-1)
    if scores.shape != (len(frame),):
        raise ScorerError(f"{name}: returned {scores.shape[0]} scores for {len(frame)} rows")
    return scores


def _sampled_ranks(
    tasks: EvalTasks, name: str, scorer: Scorer, progress: EvalProgress | None
) -> tuple[np.ndarray, np.ndarray]:
    """Each task's rank of the held-out item, and its AUC among the candidates."""
    width = tasks.candidate_codes.shape[1]
    step = max(1, ROWS_PER_CALL // width)
    ranks = np.empty(tasks.n_users, dtype=np.int64)
    aucs = np.empty(tasks.n_users, dtype=np.float64)
    for start in range(0, tasks.n_users, step):
        rows = np.arange(start, min(start + step, tasks.n_users))
        codes = tasks.candidate_codes[rows]
        scores = _call(scorer, name, tasks.frame(np.repeat(rows, width), codes.ravel()))
        ranks[rows] = ranks_from_scores(scores.reshape(len(rows), width))
        aucs[rows] = sampled_auc(scores.reshape(len(rows), width))
        if progress is not None:
            progress(name, int(rows[-1]) + 1, tasks.n_users)
    return ranks, aucs


def _full_ranks(
    tasks: EvalTasks, name: str, scorer: Scorer, progress: EvalProgress | None
) -> np.ndarray:
    catalogue = tasks.catalogue.astype(np.int64)
    n_items, n_cat = len(tasks.items), len(catalogue)
    step = max(1, ROWS_PER_CALL // (n_cat + 1))
    held = tasks.heldout["item_id"].cat.codes.to_numpy().astype(np.int64)
    ranks = np.empty(tasks.n_users, dtype=np.int64)
    for start in range(0, tasks.n_users, step):
        rows = np.arange(start, min(start + step, tasks.n_users))
        codes = np.concatenate(
            [held[rows, None], np.broadcast_to(catalogue, (len(rows), n_cat))], 1
        )
        scores = _call(scorer, name, tasks.frame(np.repeat(rows, n_cat + 1), codes.ravel()))
        # Out of the ranking: what the user interacted with, and the held-out item's own column.
        valid = np.ones(codes.shape, dtype=bool)
        valid[:, 1:] = catalogue[None, :] != held[rows, None]
        lo, hi = np.searchsorted(tasks.seen_keys, [rows[0] * n_items, (rows[-1] + 1) * n_items])
        seen = tasks.seen_keys[lo:hi]
        seen_rows, seen_items = seen // n_items - rows[0], seen % n_items
        at = np.minimum(np.searchsorted(catalogue, seen_items), n_cat - 1)
        listed = catalogue[at] == seen_items  # items first seen after training are not listed
        valid[seen_rows[listed], 1 + at[listed]] = False
        ranks[rows] = ranks_from_scores(scores.reshape(codes.shape), valid)
        if progress is not None:
            progress(f"{name} (full catalogue)", int(rows[-1]) + 1, tasks.n_users)
    return ranks


def evaluate(
    tasks: EvalTasks,
    scorers: dict[str, Scorer],
    baselines: tuple[str, ...] | list[str] = (),
    progress: EvalProgress | None = None,
) -> EvalReport:
    """Ranks every user's candidates with each scorer and averages the metrics.

    Args:
        tasks: from build_tasks.
        scorers: method name -> scorer.
        baselines: which of the names are baselines (for the report's lift).
        progress: called as users are scored.

    Raises:
        ScorerError: a scorer returned the wrong number of scores.
    """
    times = tasks.heldout["timestamp"]
    report = EvalReport(
        tasks.protocol.describe(),
        tasks.n_users,
        dict(tasks.skipped),
        tasks.digest(),
        baselines=[n for n in scorers if n in baselines],
        data={
            "interactions_train": len(tasks.train),
            "catalogue_items": len(tasks.catalogue),
            "users_in_log": len(tasks.users),
            "items_in_log": len(tasks.items),
            "cold_heldout_items": int(
                (~np.isin(tasks.candidate_codes[:, 0], tasks.catalogue)).sum()
            ),
            "heldout_from": str(times.min()),
            "heldout_to": str(times.max()),
            "cut": None if tasks.cut is None else str(tasks.cut),
        },
    )
    if tasks.protocol.full_catalogue:
        report.full_catalogue = {}
    for name, scorer in scorers.items():
        started = time.monotonic()
        ranks, aucs = _sampled_ranks(tasks, name, scorer, progress)
        report.metrics[name] = ranking_metrics(ranks)
        if tasks.protocol.kind == "basket":
            report.metrics[name][AUC] = float(aucs.mean()) if len(aucs) else float("nan")
        if report.full_catalogue is not None:
            ranks = _full_ranks(tasks, name, scorer, progress)
            report.full_catalogue[name] = ranking_metrics(ranks)
        report.seconds[name] = round(time.monotonic() - started, 3)
    return report


__all__ = [
    "AUC",
    "METRICS",
    "EvalReport",
    "Scorer",
    "ScorerError",
    "evaluate",
    "ranking_metrics",
    "ranks_from_scores",
    "sampled_auc",
]
