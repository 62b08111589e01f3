"""Collaborative and sequential feature tables: recent items, co-occurrence, ALS embeddings.

Built from the log's positive interactions (scoring.evaluation.PositiveEvents: purchase 1.0,
add_to_cart 0.7, click 0.5, view 0.3; impressions never count), point in time like every other
table here: a row stamped T is computed only from interactions strictly before T.

- `user_recent` (daily): the user's last `RECENT_ITEMS` distinct items before T, most recent
  first, each with its weighted interaction count, its purchases and the time of the last
  interaction (all over the user's whole history before T). A row at each snapshot (UTC
  midnight, and the log's end) after a day with new interactions: the state changes only then.
- `item_cooccurrence` (at each fit): the item's code and its `NEIGHBOURS` most co-occurring
  items with their cosine scores, over baskets (`order_id`, where the log has one) or else the
  users' histories, each basket counting its latest `BASKET_ITEMS` distinct items. A row when
  the item is created (code only), then at each fit where it had new interactions.
- `user_mf`, `item_mf` (at each fit): implicit ALS vectors (scoring.datagen.factorization),
  refitted on every interaction before the fit time, each fit warm-started from the previous
  one. Fits run every `FIT_EVERY_DAYS` days (longer when the log spans more than `MAX_FITS`
  of them) and at the log's end. Vectors of different fits live in different spaces, so each
  row carries its fit's time (`*_mf_fit`) and the request-time features use a user and an item
  vector only from the same fit. Items get a row at every fit after their first interaction;
  users at every fit with an interaction in the `MF_USER_WINDOW_S` before it (a bound on the
  table of a large shop). `recent_mf_*` is the mean item vector of the user's recent items at
  the fit.

Item ids are compared as codes: a 52-bit hash of the id, exact in a float64, so the
request-time UDFs can match a candidate against the user's items on numeric columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scoring.core.codes import item_codes
from scoring.datagen.factorization import ALSConfig, Factors, initial_vectors
from scoring.datagen.factorization import fit as fit_als
from scoring.evaluation.interactions import PositiveEvents, latest_distinct

DAY = 86_400
RECENT_ITEMS = 50
NEIGHBOURS = 30
BASKET_ITEMS = 200
FIT_EVERY_DAYS = 7
MAX_FITS = 16
MF_USER_WINDOW_S = 90 * DAY
FACTORS = ALSConfig().factors
TABLES = ("user_recent", "item_cooccurrence", "user_mf", "item_mf")
_PAIRS_PER_CHUNK = 50_000
_COOC_BLOCK_NNZ = 20_000_000


def fit_times(snaps: np.ndarray) -> np.ndarray:
    """Every `FIT_EVERY_DAYS`-th midnight after the first (fewer for a long log), and the end."""
    first, end = int(snaps[0]), int(snaps[-1])
    span_days = max((end - first) // DAY, 1)
    every = max(FIT_EVERY_DAYS, -(-span_days // MAX_FITS)) * DAY
    times = np.arange(first + every, end, every, dtype=np.int64)
    return np.unique(np.append(times, end))


@dataclass(frozen=True, slots=True)
class Interactions:
    """Positive interactions in time order: user and item indices, Unix seconds, weight,
    whether a purchase, and the basket index (order, or the user)."""

    user: np.ndarray
    item: np.ndarray
    t: np.ndarray
    weight: np.ndarray
    purchase: np.ndarray
    basket: np.ndarray
    n_users: int
    n_items: int

    @classmethod
    def of(
        cls,
        events: pd.DataFrame,
        t: np.ndarray,
        user: np.ndarray,
        item: np.ndarray,
        n_users: int,
        n_items: int,
        positives: PositiveEvents | None = None,
    ) -> Interactions:
        weights = (positives or PositiveEvents()).weights()
        kind = events["event_type"].to_numpy()
        keep = (item >= 0) & np.isin(kind, list(weights))
        w = pd.Series(kind[keep]).map(weights).to_numpy(dtype=np.float64)
        order = np.argsort(t[keep], kind="stable")
        if "order_id" in events.columns:
            orders = events["order_id"].fillna("").astype(str).to_numpy()[keep]
        else:
            orders = np.full(int(keep.sum()), "", dtype=object)
        users = user[keep].astype(np.int64)
        # A basket is the order; without one, the user's whole history.
        order_code = pd.factorize(orders)[0].astype(np.int64)
        basket = np.where(orders != "", order_code, order_code.max(initial=0) + 1 + users)
        return cls(
            user=users[order].astype(np.int64),
            item=item[keep][order].astype(np.int64),
            t=t[keep][order].astype(np.int64),
            weight=w[order],
            purchase=(kind[keep] == "purchase")[order],
            basket=basket[order],
            n_users=n_users,
            n_items=n_items,
        )

    def before(self, time: int) -> Interactions:
        """The interactions strictly before `time` (a prefix: they are in time order)."""
        n = int(np.searchsorted(self.t, time, side="left"))
        return Interactions(
            self.user[:n],
            self.item[:n],
            self.t[:n],
            self.weight[:n],
            self.purchase[:n],
            self.basket[:n],
            self.n_users,
            self.n_items,
        )


class History:
    """Each user's interactions in time order, for "the last k distinct items before T"."""

    def __init__(self, x: Interactions) -> None:
        order = np.argsort(x.user, kind="stable")  # per user, in time order
        self.user, self.item, self.t = x.user[order], x.item[order], x.t[order]
        self.keys = self.user * (np.int64(1) << np.int64(32)) + self.t
        self.start = np.searchsorted(self.user, np.arange(x.n_users), side="left")
        pair = self.user * np.int64(x.n_items) + self.item
        by_pair = np.argsort(pair, kind="stable")  # per (user, item), in time order
        same = np.r_[pair[by_pair][1:] == pair[by_pair][:-1], False]
        self.next_same = np.full(len(pair), np.iinfo(np.int64).max)
        self.next_same[by_pair[same]] = by_pair[1:][same[:-1]]
        # Running totals per (user, item) up to and including each event.
        self.count = _group_cumsum(x.weight[order], by_pair, same)
        self.purchases = _group_cumsum(x.purchase[order].astype(np.float64), by_pair, same)

    def recent(self, users: np.ndarray, times: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """[pairs, k] positions (into this history; -1: none) of each (user, time) pair's last
        k distinct items before the time, most recent first, and how many there are."""
        out = np.full((len(users), k), -1, dtype=np.int64)
        found = np.zeros(len(users), dtype=np.int64)
        for lo in range(0, len(users), _PAIRS_PER_CHUNK):
            sl = slice(lo, lo + _PAIRS_PER_CHUNK)
            u = users[sl].astype(np.int64)
            end = np.searchsorted(
                self.keys, u * (np.int64(1) << np.int64(32)) + times[sl], side="left"
            )
            start = self.start[u]
            rows = np.arange(len(u))
            width = 4 * k
            while len(rows):
                pos = end[rows, None] - 1 - np.arange(width)
                inside = pos >= start[rows, None]
                last = inside & (self.next_same[np.maximum(pos, 0)] >= end[rows, None])
                rank = np.cumsum(last, axis=1)
                take = last & (rank <= k)
                done = (rank[:, -1] >= k) | ~inside[:, -1]
                r, c = np.nonzero(take & done[:, None])
                out[lo + rows[r], rank[r, c] - 1] = pos[r, c]
                found[lo + rows[done]] = np.minimum(rank[done, -1], k)
                rows, width = rows[~done], width * 4
        return out, found


def _group_cumsum(values: np.ndarray, order: np.ndarray, same_next: np.ndarray) -> np.ndarray:
    """Cumulative sums of `values` within runs of `order` (a run continues while same_next)."""
    v = values[order]
    total = np.cumsum(v)
    starts = np.r_[True, ~same_next[:-1]]
    offset = np.maximum.accumulate(np.where(starts, np.arange(len(v)), 0))
    base = np.where(offset > 0, total[np.maximum(offset - 1, 0)], 0.0)
    out = np.empty_like(total)
    out[order] = total - base
    return out


def _recent_columns(
    history: History, codes: np.ndarray, users: np.ndarray, times: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """user_recent's columns for (user, time) pairs, and the [pairs, k] item indices."""
    pos, _ = history.recent(users, times, RECENT_ITEMS)
    has = pos >= 0
    safe = np.maximum(pos, 0)
    items = np.where(has, history.item[safe], -1)
    columns: dict[str, np.ndarray] = {}
    for name, values, dtype in (
        ("recent_item", codes[np.maximum(items, 0)], np.float64),
        ("recent_count", history.count[safe], np.float32),
        ("recent_purchases", history.purchases[safe], np.float32),
        ("recent_last_ts", history.t[safe].astype(np.float64), np.float64),
    ):
        block = np.where(has, values, np.nan).astype(dtype)
        for j in range(RECENT_ITEMS):
            columns[f"{name}_{j:02d}"] = block[:, j]
    return columns, items


def _carry(
    previous: tuple[np.ndarray, np.ndarray], entities: np.ndarray, codes: np.ndarray, als: ALSConfig
) -> np.ndarray:
    """Start vectors of a fit: the previous fit's (its sorted entities and their vectors),
    else derived from the entity's code."""
    out = initial_vectors(codes[entities], als.factors, als.seed)
    ids, vectors = previous
    if len(ids):
        pos = np.minimum(np.searchsorted(ids, entities), len(ids) - 1)
        known = ids[pos] == entities
        out[known] = vectors[pos[known]]
    return out


def _recent_mean(history: History, vectors: np.ndarray, users: np.ndarray, at: int) -> np.ndarray:
    """[users, factors] mean vector of each user's recent items before `at` (0: none)."""
    out = np.zeros((len(users), vectors.shape[1]), dtype=np.float32)
    for lo in range(0, len(users), _PAIRS_PER_CHUNK // 4):
        part = users[lo : lo + _PAIRS_PER_CHUNK // 4]
        pos, found = history.recent(part, np.full(len(part), at), RECENT_ITEMS)
        items = history.item[np.maximum(pos, 0)]
        total = (vectors[items] * (pos >= 0)[:, :, None]).sum(axis=1)
        out[lo : lo + len(part)] = total / np.maximum(found, 1)[:, None]
    return out


def cooccurrence(
    basket: np.ndarray, item: np.ndarray, n_baskets: int, n_items: int, top: int = NEIGHBOURS
) -> tuple[np.ndarray, np.ndarray]:
    """Each item's `top` most co-occurring items and cosine scores ([n_items, top]; -1 / NaN
    pad). Each basket counts its latest BASKET_ITEMS distinct items (arrays in time order)."""
    b, i = latest_distinct(basket, item, n_items, BASKET_ITEMS)
    x = sp.csr_matrix((np.ones(len(b), dtype=np.float32), (b, i)), shape=(n_baskets, n_items))
    xt = x.T.tocsr()
    norm = 1.0 / np.sqrt(np.maximum(np.asarray(xt.sum(axis=1)).ravel(), 1.0))
    cost = np.cumsum(xt @ np.asarray(x.sum(axis=1)).ravel())
    nbr = np.full((n_items, top), -1, dtype=np.int64)
    score = np.full((n_items, top), np.nan, dtype=np.float32)
    start = 0
    while start < n_items:
        spent = cost[start - 1] if start else 0.0
        stop = max(int(np.searchsorted(cost, spent + _COOC_BLOCK_NNZ, side="right")), start + 1)
        block = (xt[start:stop] @ x).tocoo()
        rows = block.row + start
        value = block.data * norm[rows] * norm[block.col]
        ok = (block.col != rows) & (value > 0)
        rows, cols, value = rows[ok], block.col[ok], value[ok]
        order = np.lexsort((cols, -value, rows))
        rows, cols, value = rows[order], cols[order], value[order]
        first = np.searchsorted(rows, rows, side="left")
        rank = np.arange(len(rows)) - first
        sel = rank < top
        nbr[rows[sel], rank[sel]] = cols[sel]
        score[rows[sel], rank[sel]] = value[sel]
        start = stop
    return nbr, score


def _utc(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True))


def _frame(key: str, ids: np.ndarray, times: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({key: ids, **columns, "event_timestamp": _utc(times)})


def _fit_frame(entity: str, ids: np.ndarray, fit_at: float, **vectors: np.ndarray) -> pd.DataFrame:
    """Rows of one ALS fit: `<entity>_mf_fit` and each [rows, factors] matrix as `<name>_NN`."""
    fit = np.full(len(ids), float(fit_at))
    columns = {f"{name}_{d:02d}": m[:, d] for name, m in vectors.items() for d in range(m.shape[1])}
    return _frame(f"{entity}_id", ids, fit.astype(np.int64), **{f"{entity}_mf_fit": fit}, **columns)


def collaborative_tables(
    x: Interactions,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    created: np.ndarray,
    snaps: np.ndarray,
    als: ALSConfig | None = None,
) -> dict[str, pd.DataFrame]:
    """The four tables (module docstring) of the interactions `x`.

    Args:
        x: positive interactions, indices into `user_ids` / `item_ids`.
        created: each item's creation time (Unix seconds): its first item_cooccurrence row.
        snaps: the daily snapshot times (scoring.datagen.build.snapshot_times).
    """
    als = als if als is not None else ALSConfig()
    codes = item_codes(item_ids)
    history = History(x)
    first = np.full(len(item_ids), np.iinfo(np.int64).max)
    np.minimum.at(first, x.item, x.t)
    created = np.minimum(np.asarray(created, dtype=np.int64), first)
    tables: dict[str, pd.DataFrame] = {}

    # user_recent: after each day with new interactions.
    after = np.searchsorted(snaps, x.t, side="right")
    pair = np.unique(x.user * np.int64(len(snaps) + 1) + after)
    pu, pt = pair // (len(snaps) + 1), snaps[np.minimum(pair % (len(snaps) + 1), len(snaps) - 1)]
    # The columns dict is a temporary: held here, it would double the table's memory.
    tables["user_recent"] = _frame(
        "user_id", user_ids[pu], pt, **_recent_columns(history, codes, pu, pt)[0]
    )

    # Creation rows of item_cooccurrence: the code, no neighbours yet.
    empty_n = np.full(len(item_ids), np.nan)
    cooc_rows = [
        _frame(
            "item_id",
            item_ids,
            created,
            item_code=codes,
            **{f"co_item_{j:02d}": empty_n for j in range(NEIGHBOURS)},
            **{f"co_score_{j:02d}": empty_n.astype(np.float32) for j in range(NEIGHBOURS)},
        )
    ]
    user_rows, item_rows = [], []
    user_codes = item_codes(user_ids)
    nothing = (np.zeros(0, dtype=np.int64), np.zeros((0, als.factors), dtype=np.float32))
    user_vectors, item_vectors = nothing, nothing
    warm = False
    previous = int(snaps[0])
    for fit_at in fit_times(snaps):
        seen = x.before(int(fit_at))
        if not len(seen.t):
            previous = int(fit_at)
            continue
        n_baskets = int(seen.basket.max()) + 1
        nbr, score = cooccurrence(seen.basket, seen.item, n_baskets, x.n_items)
        fresh = np.unique(seen.item[seen.t >= previous])
        nbr_codes = np.where(nbr >= 0, codes[np.maximum(nbr, 0)], np.nan)
        cooc_rows.append(
            _frame(
                "item_id",
                item_ids[fresh],
                np.full(len(fresh), fit_at),
                item_code=codes[fresh],
                **{f"co_item_{j:02d}": nbr_codes[fresh, j] for j in range(NEIGHBOURS)},
                **{f"co_score_{j:02d}": score[fresh, j] for j in range(NEIGHBOURS)},
            )
        )
        # The fit sees the users and items with interactions before it, and nothing else.
        fit_users, fit_items = np.unique(seen.user), np.unique(seen.item)
        counts = sp.csr_matrix(
            (
                seen.weight,
                (np.searchsorted(fit_users, seen.user), np.searchsorted(fit_items, seen.item)),
            ),
            shape=(len(fit_users), len(fit_items)),
        )
        counts.sum_duplicates()
        init = Factors(
            _carry(user_vectors, fit_users, user_codes, als),
            _carry(item_vectors, fit_items, codes, als),
        )
        factors = fit_als(counts, init, als, warm=warm)
        warm = True
        user_vectors, item_vectors = (fit_users, factors.users), (fit_items, factors.items)
        all_items = np.zeros((x.n_items, als.factors), dtype=np.float32)
        all_items[fit_items] = factors.items
        item_rows.append(_fit_frame("item", item_ids[fit_items], fit_at, item_mf=factors.items))
        users = np.unique(seen.user[seen.t >= fit_at - MF_USER_WINDOW_S])
        user_rows_of = factors.users[np.searchsorted(fit_users, users)]
        mean = _recent_mean(history, all_items, users, int(fit_at))
        user_rows.append(
            _fit_frame(
                "user",
                user_ids[users],
                fit_at,
                user_mf=user_rows_of,
                recent_mf=mean.astype(np.float32),
            )
        )
        previous = int(fit_at)
    tables["item_cooccurrence"] = pd.concat(cooc_rows, ignore_index=True)
    tables["user_mf"] = _concat(user_rows, "user_id", "user_mf", "user_mf_fit", als.factors)
    tables["item_mf"] = _concat(item_rows, "item_id", "item_mf", "item_mf_fit", als.factors)
    return tables


def _concat(
    parts: list[pd.DataFrame], key: str, prefix: str, fit: str, factors: int
) -> pd.DataFrame:
    if parts:
        return pd.concat(parts, ignore_index=True)
    columns = [f"{prefix}_{d:02d}" for d in range(factors)]
    if prefix == "user_mf":
        columns += [f"recent_mf_{d:02d}" for d in range(factors)]
    empty = {c: pd.Series(dtype=np.float32) for c in columns}
    return pd.DataFrame(
        {
            key: pd.Series(dtype=object),
            fit: pd.Series(dtype=np.float64),
            **empty,
            "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )


__all__ = [
    "FIT_EVERY_DAYS",
    "NEIGHBOURS",
    "RECENT_ITEMS",
    "TABLES",
    "History",
    "Interactions",
    "collaborative_tables",
    "cooccurrence",
    "fit_times",
    "item_codes",
]
