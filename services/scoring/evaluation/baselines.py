"""The obvious baselines a model must beat, fitted on the training interactions only.

- `popularity`: the item's weighted count of positive interactions in training.
- `popularity (recent)`: the same over the window before the row's time (capped at the end of
  training): the last 7 days, or the latest 10% of the training span when that is shorter.
  Ties by all-time popularity.
- `most bought (user)`: the user's own weighted count of the item; ties (e.g. every item the user
  never touched) by popularity.
- `co-occurrence`: item-to-item, over baskets (`order_id` when the log has one; a row without
  one is in its user's basket) or else over users. Each item keeps the `NEIGHBOURS` items it
  co-occurs with most often, weighted by cosine (co-occurrences / sqrt(baskets holding one x
  baskets holding the other)); a user's score for an item sums those weights over the distinct
  items of the user's training history. Ties by popularity. Each basket or user counts its
  `ITEMS_PER_ROW` most recent distinct items, which bounds the quadratic cost of a heavy user.
  (Measured with leave-one-out on Ta-Feng, Online Retail and the synthetic log, against keeping
  and weighting by cosine, by count, or by conditional probability: never the best nor the worst
  on one log, the best on average; keeping neighbours by cosine favours rare items.)
- `co-occurrence with the cart` (basket protocol): the same item-to-item weights, summed over
  the items of the row's cart (its cart fields' item codes) instead of the user's history.
  Ties by popularity.

All of it is numpy and scipy.sparse over integer codes, built block by block, so that a
10-million-event log fits in a few GiB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scoring.core.codes import item_codes
from scoring.core.targets import CART_ITEM_FIELDS
from scoring.evaluation.interactions import latest_distinct, sorted_categorical
from scoring.evaluation.metrics import Scorer
from scoring.evaluation.protocol import timestamps_ns

POPULARITY = "popularity"
RECENT = "popularity (recent)"
MOST_BOUGHT = "most bought (user)"
CO_OCCURRENCE = "co-occurrence"
CART_CO_OCCURRENCE = "co-occurrence with the cart"
BASELINES = (POPULARITY, RECENT, MOST_BOUGHT, CO_OCCURRENCE)
BASKET_BASELINES = (POPULARITY, CART_CO_OCCURRENCE, MOST_BOUGHT)

RECENT_WINDOW = pd.Timedelta(days=7)
RECENT_SHARE = 0.1
ITEMS_PER_ROW = 200
NEIGHBOURS = 200
# Ties are broken by adding TIE * (popularity / the largest popularity): small enough to reorder
# only scores that differ by less than it.
TIE = 1e-9
_BLOCK_NNZ = 20_000_000  # co-occurrence entries computed at once
_USERS_PER_BLOCK = 2048


@dataclass(frozen=True)
class _Codes:
    """Maps ids in a scorer's frame to the training codes (-1: unseen in training)."""

    users: pd.Index
    items: pd.Index

    @staticmethod
    def _lookup(values: pd.Series, index: pd.Index) -> np.ndarray:
        if isinstance(values.dtype, pd.CategoricalDtype):
            known = index.get_indexer(values.cat.categories.astype(str))
            codes = values.cat.codes.to_numpy()
            return np.where(codes >= 0, known[codes], -1).astype(np.int64)
        return np.asarray(index.get_indexer(values.astype(str)), dtype=np.int64)

    def __call__(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self._lookup(frame["user_id"], self.users), self._lookup(
            frame["item_id"], self.items
        )


def _gather(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """values[codes], 0 where the code is -1."""
    out = np.zeros(len(codes), dtype=np.float64)
    known = codes >= 0
    out[known] = values[codes[known]]
    return out


def _pair_values(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """matrix[rows[j], cols[j]] for each j, 0 where a code is -1."""
    out = np.zeros(len(rows), dtype=np.float64)
    known = (rows >= 0) & (cols >= 0)
    if known.any():
        out[known] = np.asarray(matrix[rows[known], cols[known]]).ravel()
    return out


def _top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keeps each row's k largest entries (ties: the lower column)."""
    counts = np.diff(matrix.indptr)
    if counts.size == 0 or counts.max() <= k:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((-matrix.data, rows))
    keep = order[np.arange(len(order)) - matrix.indptr[rows[order]] < k]
    keep.sort()
    indptr = np.concatenate([[0], np.cumsum(np.minimum(counts, k))])
    return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


def _co_occurrence(
    baskets: np.ndarray, items: np.ndarray, n_baskets: int, n_items: int
) -> sp.csr_matrix:
    """Item-item co-occurrence over baskets: each item's NEIGHBOURS most frequent co-occurring
    items, weighted by cosine (count / sqrt(baskets with one * baskets with the other)).

    Args:
        baskets, items: the interactions' basket (or user) and item codes, in log order.
    """
    b, i = latest_distinct(baskets, items, n_items, ITEMS_PER_ROW)
    x = sp.csr_matrix((np.ones(len(b), dtype=np.float32), (b, i)), shape=(n_baskets, n_items))
    xt = x.T.tocsr()
    count = np.asarray(xt.sum(axis=1)).ravel()  # baskets holding each item
    row_len = np.asarray(x.sum(axis=1)).ravel()
    # Each item's co-occurrence row has at most `cost` entries: blocks of items within budget.
    cost = np.cumsum(xt @ row_len)
    norm = 1.0 / np.sqrt(np.maximum(count, 1.0))
    blocks, start = [], 0
    while start < n_items:
        spent = cost[start - 1] if start else 0.0
        stop = max(int(np.searchsorted(cost, spent + _BLOCK_NNZ, side="right")), start + 1)
        block = (xt[start:stop] @ x).tocsr()
        rows = np.repeat(np.arange(start, stop), np.diff(block.indptr))
        block.data[block.indices == rows] = 0.0  # an item does not co-occur with itself
        block.eliminate_zeros()
        block = _top_per_row(block, NEIGHBOURS)  # the most frequent neighbours
        rows = np.repeat(np.arange(start, stop), np.diff(block.indptr))
        block.data = block.data * norm[rows] * norm[block.indices]
        blocks.append(block)
        start = stop
    if not blocks:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    return sp.vstack(blocks, format="csr").astype(np.float32)


class Baselines:
    """The four baselines fitted on `train` (columns as `load_interactions`, in log order)."""

    def __init__(self, train: pd.DataFrame) -> None:
        users = sorted_categorical(train["user_id"])
        items = sorted_categorical(train["item_id"])
        self.codes = _Codes(users.cat.categories, items.cat.categories)
        # The training items by their codes (core.codes): how cart fields name items.
        self.by_code = pd.Index(item_codes(self.codes.items.to_numpy(dtype=object)))
        u = users.cat.codes.to_numpy().astype(np.int64)
        i = items.cat.codes.to_numpy().astype(np.int64)
        w = train["weight"].to_numpy(dtype=np.float64)
        n_users, n_items = len(self.codes.users), len(self.codes.items)
        self.popularity = np.bincount(i, weights=w, minlength=n_items)
        top = self.popularity.max() if n_items else 0.0
        self.tie = TIE * self.popularity / top if top > 0 else np.zeros(n_items)
        self.user_item = sp.csr_matrix((w, (u, i)), shape=(n_users, n_items))
        self.user_item.sum_duplicates()
        # Recent popularity: cumulative weights by (item, time), read between two times.
        seconds = timestamps_ns(train["timestamp"]) // 1_000_000_000
        self.t0 = int(seconds.min()) if len(seconds) else 0
        self.end = int(seconds.max()) + 1 if len(seconds) else 0
        span = pd.Timedelta(seconds=self.end - self.t0)
        self.window = int(min(RECENT_WINDOW, span * RECENT_SHARE).total_seconds())
        keys = (i << 32) | (seconds - self.t0)
        order = np.argsort(keys, kind="stable")
        self.recent_keys = keys[order]
        self.recent_cum = np.concatenate([[0.0], np.cumsum(w[order])])
        b, n_baskets = u, n_users
        if "order_id" in train.columns:
            # Rows without an order id count in a basket of their user's own.
            orders = sorted_categorical(train["order_id"])
            b = orders.cat.codes.to_numpy().astype(np.int64)
            empty = np.flatnonzero(orders.cat.categories == "")
            b = np.where((b < 0) | np.isin(b, empty), len(orders.cat.categories) + u, b)
            n_baskets = len(orders.cat.categories) + n_users
        self.neighbours = _co_occurrence(b, i, n_baskets, n_items)
        history = self.user_item.copy()
        history.data[:] = 1.0
        self.history = history.astype(np.float32)

    def scorers(self) -> dict[str, Scorer]:
        return {
            POPULARITY: self.score_popularity,
            RECENT: self.score_recent,
            MOST_BOUGHT: self.score_most_bought,
            CO_OCCURRENCE: self.score_co_occurrence,
        }

    def score_popularity(self, frame: pd.DataFrame) -> np.ndarray:
        return _gather(self.popularity, self.codes(frame)[1])

    def score_recent(self, frame: pd.DataFrame) -> np.ndarray:
        items = self.codes(frame)[1]
        at = timestamps_ns(frame["timestamp"]) // 1_000_000_000
        end = np.clip(np.minimum(at, self.end) - self.t0, 0, None)
        start = np.clip(end - self.window, 0, None)
        known = items >= 0
        base = np.where(known, items, 0) << 32
        hi = np.searchsorted(self.recent_keys, base | end)
        lo = np.searchsorted(self.recent_keys, base | start)
        recent = np.where(known, self.recent_cum[hi] - self.recent_cum[lo], 0.0)
        return np.asarray(recent + _gather(self.tie, items))

    def score_most_bought(self, frame: pd.DataFrame) -> np.ndarray:
        users, items = self.codes(frame)
        return np.asarray(_pair_values(self.user_item, users, items) + _gather(self.tie, items))

    def score_cart(self, frame: pd.DataFrame) -> np.ndarray:
        """Co-occurrence with the row's cart (its CART_ITEM_FIELDS item codes)."""
        items = self.codes(frame)[1]
        out = _gather(self.tie, items)
        cart = frame[list(CART_ITEM_FIELDS)].to_numpy(dtype=np.float64)
        at = self.by_code.get_indexer(cart.ravel()).reshape(cart.shape)
        for slot in range(cart.shape[1]):
            out += _pair_values(self.neighbours, at[:, slot].astype(np.int64), items)
        return out

    def score_co_occurrence(self, frame: pd.DataFrame) -> np.ndarray:
        users, items = self.codes(frame)
        out = _gather(self.tie, items)
        rows = np.flatnonzero((users >= 0) & (items >= 0))
        if rows.size == 0:
            return out
        order = rows[np.argsort(users[rows], kind="stable")]
        first = np.unique(users[order], return_index=True)[1]
        bounds = [*first[::_USERS_PER_BLOCK], len(order)]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            part = order[lo:hi]
            block_users, local = np.unique(users[part], return_inverse=True)
            scores = (self.history[block_users] @ self.neighbours).tocsr()
            scores.sum_duplicates()  # canonical: looked up by binary search
            out[part] += _pair_values(scores, local.astype(np.int64), items[part])
        return out


def fit_baselines(train: pd.DataFrame) -> dict[str, Scorer]:
    """The baselines' scorers, fitted on `train` only (never on held-out rows)."""
    return Baselines(train).scorers()


def fit_basket_baselines(train: pd.DataFrame) -> dict[str, Scorer]:
    """The basket protocol's baselines (BASKET_BASELINES), fitted on `train` only."""
    fitted = Baselines(train)
    return {
        POPULARITY: fitted.score_popularity,
        CART_CO_OCCURRENCE: fitted.score_cart,
        MOST_BOUGHT: fitted.score_most_bought,
    }


__all__ = [
    "BASELINES",
    "BASKET_BASELINES",
    "CART_CO_OCCURRENCE",
    "Baselines",
    "fit_baselines",
    "fit_basket_baselines",
]
