"""Post-processing of scores: business filters, diversity re-ranking, top_k, reasons."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from scoring.core.contract import FeatureContract
from scoring.core.targets import Target

# The filter reasons of the item and activity targets (each target names its own:
# Target.unavailable_reason, Target.ended_reason), and of an item already in the cart.
OUT_OF_STOCK = "out_of_stock"
ACTIVITY_ENDED = "activity_ended"
IN_CART = "in_cart"


@dataclass(frozen=True, slots=True)
class Columns:
    """Raw feature values the post-processing reads, by candidate (None: not in the contract),
    and the target's filter reasons."""

    popularity: np.ndarray | None
    category: np.ndarray | None
    in_stock: np.ndarray | None
    end_ts: np.ndarray | None
    unavailable_reason: str = OUT_OF_STOCK
    ended_reason: str = ACTIVITY_ENDED

    @classmethod
    def of(
        cls, target: Target, contract: FeatureContract, matrix: np.ndarray, missing: np.ndarray
    ) -> Columns:
        # Value-column positions (vectors expand into several columns; scalars are one).
        index = contract.value_index

        def column(ref: str | None, known_only: bool) -> np.ndarray | None:
            if ref is None or ref not in index:
                return None
            values = matrix[:, index[ref]].astype(np.float64)
            # Business rules act on known values only: a default never drops a candidate.
            return np.where(missing[:, index[ref]], np.nan, values) if known_only else values

        return cls(
            popularity=column(target.popularity_ref, known_only=False),
            category=column(target.category_ref, known_only=False),
            in_stock=column(target.in_stock_ref, known_only=True),
            end_ts=column(target.end_ts_ref, known_only=True),
            unavailable_reason=target.unavailable_reason,
            ended_reason=target.ended_reason,
        )


def unavailable(columns: Columns, request_ts: int) -> dict[int, str]:
    """Candidates that business rules drop, with the target's reason: unavailable (out of
    stock, a bundle with an item out of stock), or ended (an activity or bundle)."""
    dropped: dict[int, str] = {}
    if columns.in_stock is not None:
        for i in np.flatnonzero(columns.in_stock == 0):
            dropped[int(i)] = columns.unavailable_reason
    if columns.end_ts is not None:
        for i in np.flatnonzero(columns.end_ts <= request_ts):
            dropped.setdefault(int(i), columns.ended_reason)
    return dropped


def in_cart(candidate_ids: Iterable[str], cart_item_ids: Iterable[str]) -> dict[int, str]:
    """Candidates already in the cart (never recommended to add again)."""
    cart = set(cart_item_ids)
    if not cart:
        return {}
    return {i: IN_CART for i, cid in enumerate(candidate_ids) if cid in cart}


def mmr_order(scores: np.ndarray, categories: np.ndarray, diversity: float, k: int) -> np.ndarray:
    """Maximal marginal relevance: each pick maximises (1-d)*relevance - d*redundancy.

    Relevance is the score min-max scaled to [0, 1]; redundancy is 1 when a candidate's category
    was already picked. `diversity` 0 gives the plain score order.
    """
    n = len(scores)
    k = min(k, n)
    span = float(scores.max() - scores.min()) if n else 0.0
    relevance = (scores - scores.min()) / span if span > 0 else np.zeros(n)
    redundancy = np.zeros(n)
    available = np.ones(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    for pos in range(k):
        gain = np.where(available, (1 - diversity) * relevance - diversity * redundancy, -np.inf)
        best = int(np.argmax(gain))
        order[pos] = best
        available[best] = False
        redundancy[categories == categories[best]] = 1.0
    return order


def rank(
    scores: np.ndarray,
    top_k: int,
    diversity: float = 0.0,
    categories: np.ndarray | None = None,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> np.ndarray:
    """Indices of the candidates to return, best first, at most `top_k`."""
    keep = np.array([i for i in range(len(scores)) if i not in exclude], dtype=np.int64)
    if keep.size == 0:
        return keep
    if diversity > 0 and categories is not None:
        return np.asarray(keep[mmr_order(scores[keep], categories[keep], diversity, top_k)])
    # Stable: equal scores keep the caller's order.
    return np.asarray(keep[np.argsort(-scores[keep], kind="stable")[:top_k]])


def top_reasons(
    contributions: np.ndarray, top: int = 3
) -> tuple[list[list[int]], list[list[float]]]:
    """Per row of [candidates, groups] contributions: the `top` groups by absolute contribution
    (ties in group order) and their contributions, as Python lists (one numpy pass)."""
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :top]
    values = np.take_along_axis(contributions, order, axis=1).astype(np.float64)
    return order.tolist(), values.tolist()


def reasons(contributions: np.ndarray, groups: list[str], top: int = 3) -> list[tuple[str, float]]:
    """The feature groups that matter most for one candidate, by absolute contribution."""
    order, values = top_reasons(np.asarray(contributions)[None, :], top)
    return [(groups[i], v) for i, v in zip(order[0], values[0], strict=True)]
