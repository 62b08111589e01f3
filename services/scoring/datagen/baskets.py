"""Basket feature tables: what is bought with an item, and which categories go with its category.

The inputs of features/basket.py. Baskets are the log's purchases grouped by `order_id`; a
purchase without one belongs to its user's basket of that UTC day. A basket holds its first
`BASKET_ITEMS` distinct items (scoring.datagen.collaborative.BASKET_ITEMS), each from its first
purchase in the basket. A row stamped T counts the purchases before T and nothing else: a basket
whose items were bought across T holds, in that row, its items bought before T (its later items
join it from the next fit on), so nothing bought at T or later is in a row stamped T. The
30-day counts hold the purchases of [T - 30 days, T). Rows are written at the fit times of
scoring.datagen.collaborative.fit_times (weekly; fewer for a long log).

Smoothed PMI. For items i, j, with n_ij the baskets holding both, n_i the baskets holding i and
N every basket (all before T):

    pmi(i, j) = log((n_ij + A) / (n_i * n_j / N + A)),    A = PAIR_PRIOR = 1 basket

Plain PMI is log(n_ij / E_ij), E_ij = n_i * n_j / N being the pair count expected were i and j
bought independently; here both the observed and the expected count get a prior of A baskets.
The score shrinks towards 0 where the evidence is thin: a pair of two rare items seen once
scores log(1 + 1/A) = 0.69 however rare they are (plain PMI gives it log N, the top of every
list), a pair scores high only when seen repeatedly and beyond what the items' popularity
explains, and two popular items bought together as often as chance gives (n_ij = E_ij) score 0.
Neighbours are ranked by it (ties: more pair baskets first, then the lower item index). The
category lift is the same formula over the baskets' distinct categories.

Tables:
- `item_copurchase`: a row at the item's creation (code and category, counts 0, no
  neighbours), then one at each fit where its counts changed: every item bought in
  [previous fit - 30 days, fit) or in a basket that grew since the previous fit, so that its
  all-time and 30-day counts are exact at every row (an item without such a purchase had none
  in its last row's 30-day window either; only its neighbours' ranks, which depend on the
  other items' counts, may be a few fits old). Fields: `item_code`
  (scoring.core.codes.item_codes), `category_code` (the build's vocabulary code, -1: none),
  `basket_count` (baskets holding the item, all time), `basket_count_30d`, and its
  `NEIGHBOURS` best partners by smoothed PMI (`cp_item_NN` code, `cp_id_NN` id, `cp_count_NN`
  and `cp_count_30d_NN` pair baskets, `cp_pmi_NN`).
- `category_complements`: a row at the item's creation (no complements), then at every fit a
  row for every item created before it whose category was in a basket: the `COMPLEMENTS`
  other categories with the highest smoothed log-lift with its category (`cc_category_NN`
  code, `cc_lift_NN`). Rows for every such item, not only the bought ones: a new or rarely
  bought item gets its category's complements.

Memory and time: pair counts are sparse (scipy), updated fit by fit (only the baskets with a
purchase since the previous fit are multiplied, `PairCounts`); the 30-day pair counts come from
the window's purchases alone; partners are ranked a block of rows at a time, only a row's
few best bins of scores sorted (`top_partners`). Nothing is items x items dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import ArrayLike

from scoring.core.codes import item_codes
from scoring.datagen.collaborative import BASKET_ITEMS, fit_times

DAY = 86_400
WINDOW_S = 30 * DAY
NEIGHBOURS = 30
COMPLEMENTS = 20
PAIR_PRIOR = 1.0
TABLES = ("item_copurchase", "category_complements")
_ROWS_PER_BLOCK = 2048  # rows ranked at once (a bound on the partner arrays)
_BINS = 256


def smoothed_pmi(n_ij: ArrayLike, n_i: ArrayLike, n_j: ArrayLike, n: float) -> np.ndarray:
    """log((n_ij + A) / (n_i n_j / N + A)): PMI shrunk towards 0 for rare pairs (module doc)."""
    expected = np.asarray(n_i, dtype=np.float64) * np.asarray(n_j, dtype=np.float64) / max(n, 1.0)
    return np.asarray(
        np.log((np.asarray(n_ij, dtype=np.float64) + PAIR_PRIOR) / (expected + PAIR_PRIOR))
    )


def basket_keys(orders: np.ndarray, user: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Each purchase's basket (int64 codes, 0..baskets-1): its `order_id`, else its user's UTC
    day. `orders` holds "" where there is none."""
    orders = np.asarray(orders, dtype=object)
    has = orders != ""
    order_code = pd.factorize(orders)[0].astype(np.int64)
    day = np.asarray(t, dtype=np.int64) // DAY
    day_key = np.asarray(user, dtype=np.int64) * (np.int64(1) << np.int64(32)) + (
        day - day.min(initial=0)
    )
    day_code = pd.factorize(day_key)[0].astype(np.int64)
    key = np.where(has, order_code, order_code.max(initial=0) + 1 + day_code)
    return np.asarray(pd.factorize(key)[0], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Baskets:
    """The distinct items of the log's baskets: one entry per (basket, item), at the item's
    first purchase in the basket (a basket's first `BASKET_ITEMS` items), in time order.

    Attributes:
        basket: [entries] the basket (0..n_baskets-1, numbered in the order of `t`).
        item: [entries] the item (or, `by`, another entity: a category).
        item_t: [entries] the item's first purchase in the basket, Unix seconds, ascending:
            what a row stamped T counts of a basket is its entries with item_t < T.
        t: [baskets] each basket's last purchase, ascending: for counting only baskets complete
            before T (scoring.datagen.bundles does); the tables here count entries.
        n_items: the number of items (indices are below it).
    """

    basket: np.ndarray
    item: np.ndarray
    item_t: np.ndarray
    t: np.ndarray
    n_items: int

    @property
    def n_baskets(self) -> int:
        return len(self.t)

    @classmethod
    def of(
        cls, events: pd.DataFrame, t: np.ndarray, user: np.ndarray, item: np.ndarray, n_items: int
    ) -> Baskets:
        """The baskets of an event log's purchases (`t`, `user`, `item`: per event, item -1
        when none)."""
        keep = (events["event_type"].to_numpy() == "purchase") & (np.asarray(item) >= 0)
        if "order_id" in events.columns:
            orders = events["order_id"].fillna("").astype(str).to_numpy(dtype=object)[keep]
        else:
            orders = np.full(int(keep.sum()), "", dtype=object)
        tt = np.asarray(t, dtype=np.int64)[keep]
        key = basket_keys(orders, np.asarray(user)[keep], tt)
        n_baskets = int(key.max(initial=-1)) + 1
        last = np.full(n_baskets, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, key, tt)
        by_end = np.argsort(last, kind="stable")
        rank = np.empty(n_baskets, dtype=np.int64)
        rank[by_end] = np.arange(n_baskets)
        basket, entity, first = _first_entries(
            rank[key], np.asarray(item, dtype=np.int64)[keep], tt, n_items, BASKET_ITEMS
        )
        return cls(basket, entity, first, last[by_end], n_items)

    def by(self, column: np.ndarray, width: int) -> Baskets:
        """The baskets' distinct `column[item]` values (e.g. categories; -1 left out), each at
        the first purchase of an item with it."""
        value = np.asarray(column, dtype=np.int64)[self.item]
        ok = value >= 0
        basket, entity, first = _first_entries(
            self.basket[ok], value[ok], self.item_t[ok], width, np.iinfo(np.int64).max
        )
        return Baskets(basket, entity, first, self.t, width)

    def before(self, time: int) -> int:
        """The number of entries before `time` (they are the first ones)."""
        return int(np.searchsorted(self.item_t, time, side="left"))

    def matrix(self, entries: slice | np.ndarray) -> sp.csr_matrix:
        """[baskets of the entries, n_items] 0/1 incidence of `entries` (a slice or a mask)."""
        rows = pd.factorize(self.basket[entries])[0]
        cols = self.item[entries]
        return sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(int(rows.max(initial=-1)) + 1, self.n_items),
            dtype=np.float32,
        )


def _first_entries(
    basket: np.ndarray, item: np.ndarray, t: np.ndarray, width: int, per_basket: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each (basket, item) at its first time, a basket's first `per_basket` items, by time."""
    order = np.argsort(t, kind="stable")
    basket, item, t = basket[order], item[order], t[order]
    first = np.unique(basket * np.int64(max(width, 1)) + item, return_index=True)[1]
    first.sort()
    basket, item, t = basket[first], item[first], t[first]
    by_basket = np.argsort(basket, kind="stable")  # in time order within a basket
    rank = np.empty(len(basket), dtype=np.int64)
    start = np.searchsorted(basket[by_basket], basket[by_basket], side="left")
    rank[by_basket] = np.arange(len(basket)) - start
    keep = rank < per_basket
    return basket[keep], item[keep], t[keep]


class PairCounts:
    """Running basket counts of items (or categories: `Baskets.by`) and of their pairs, from the
    entries before a time, advanced in time order: `advance(T)` adds the entries before T.

    A basket whose items were bought across T counts with its items bought before T: what a
    row at T may know. Its later items join its pairs at a later `advance` (the affected
    baskets' pairs are recounted: new pairs minus those counted before).
    """

    def __init__(self, baskets: Baskets):
        self.baskets = baskets
        self.width = baskets.n_items
        self.done = 0  # entries counted
        self.n_baskets = 0  # baskets with an entry counted
        self.counts = np.zeros(self.width, dtype=np.float64)
        self.pairs = sp.csr_matrix((self.width, self.width), dtype=np.float32)
        self.touched = np.zeros(0, dtype=np.int64)  # entities of the baskets of the last advance
        self._seen = np.zeros(baskets.n_baskets, dtype=bool)

    def advance(self, time: int) -> None:
        b = self.baskets
        hi = b.before(time)
        if hi <= self.done:
            self.touched = np.zeros(0, dtype=np.int64)
            return
        new = slice(self.done, hi)
        self.counts += np.bincount(b.item[new], minlength=self.width)
        affected = np.zeros(b.n_baskets, dtype=bool)
        affected[b.basket[new]] = True
        now = np.nonzero(affected[b.basket[:hi]])[0]
        grown = b.matrix(now)
        delta = (grown.T @ grown).tocsr()
        old = now[now < self.done]
        if len(old):
            before = b.matrix(old)
            delta = (delta - (before.T @ before)).tocsr()
            delta.eliminate_zeros()
        self.pairs = (self.pairs + delta).tocsr()
        self.pairs.sort_indices()
        self._seen[b.basket[new]] = True
        self.n_baskets = int(self._seen.sum())
        self.touched = np.unique(b.item[now])
        self.done = hi


def top_partners(
    pairs: sp.csr_matrix, rows: np.ndarray, counts: np.ndarray, n_baskets: int, top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each of `rows`' `top` partners by smoothed PMI, itself left out: [len(rows), top] partner
    index (-1 pad), pair baskets (0 pad) and smoothed PMI (NaN pad). Ties: more pair baskets
    first, then the lower index.

    Args:
        pairs: symmetric [n, n] pair basket counts (its diagonal is ignored).
        rows: the entities to rank partners of.
        counts: [n] baskets holding each entity.
    """
    partner = np.full((len(rows), top), -1, dtype=np.int64)
    together = np.zeros((len(rows), top), dtype=np.float64)
    score = np.full((len(rows), top), np.nan, dtype=np.float64)
    for lo in range(0, len(rows), _ROWS_PER_BLOCK):
        block = rows[lo : lo + _ROWS_PER_BLOCK]
        sub = pairs[block].tocoo()
        r, j = sub.row.astype(np.int64), sub.col.astype(np.int64)
        n_ij = sub.data.astype(np.float64)
        ok = (j != block[r]) & (n_ij > 0)
        r, j, n_ij = r[ok], j[ok], n_ij[ok]
        pmi = smoothed_pmi(n_ij, counts[block[r]], counts[j], float(n_baskets))
        keep = _best_bins(r, pmi, len(block), top)
        r, j, n_ij, pmi = r[keep], j[keep], n_ij[keep], pmi[keep]
        order = np.lexsort((j, -n_ij, -pmi, r))
        r, j, n_ij, pmi = r[order], j[order], n_ij[order], pmi[order]
        rank = np.arange(len(r)) - np.searchsorted(r, r, side="left")
        sel = rank < top
        at = lo + r[sel]
        partner[at, rank[sel]] = j[sel]
        together[at, rank[sel]] = n_ij[sel]
        score[at, rank[sel]] = pmi[sel]
    return partner, together, score


def _best_bins(r: np.ndarray, value: np.ndarray, rows: int, top: int) -> np.ndarray:
    """A mask holding each row's `top` largest values (and some more): values are put in
    `_BINS` bins of equal width, a row keeps its bins from the highest down to the first that
    brings it `top` values. What it leaves out is below everything it keeps, so the sort that
    follows only sees a few more than `top` values of a row with thousands of partners."""
    if not len(value):
        return np.ones(0, dtype=bool)
    low, high = float(value.min()), float(value.max())
    scale = (_BINS - 1) / (high - low) if high > low else 0.0
    q = ((value - low) * scale).astype(np.int64)  # 0 .. _BINS - 1, monotone in value
    hist = np.bincount(r * _BINS + q, minlength=rows * _BINS).reshape(rows, _BINS)
    at_least = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # values in bin b or higher
    cut = np.maximum((at_least >= top).sum(axis=1) - 1, 0)
    return np.asarray(q >= cut[r])


def _lookup(pairs: sp.csr_matrix, r: np.ndarray, j: np.ndarray) -> np.ndarray:
    """pairs[r, j] for many (r, j) at once (0 where absent); `pairs` has sorted indices."""
    coo = pairs.tocoo()
    width = np.int64(pairs.shape[1])
    keys = coo.row.astype(np.int64) * width + coo.col.astype(np.int64)
    want = r.astype(np.int64) * width + j.astype(np.int64)
    pos = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
    found = (keys[pos] == want) if len(keys) else np.zeros(len(want), dtype=bool)
    return np.where(found, coo.data[pos] if len(keys) else 0.0, 0.0).astype(np.float64)


def _utc(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True))


@dataclass(slots=True)
class _Rows:
    """Rows of a table, gathered fit by fit as blocks and made a DataFrame once."""

    blocks: dict[str, list[np.ndarray]]

    @classmethod
    def empty(cls) -> _Rows:
        return cls({})

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self.blocks.setdefault(name, []).append(values)

    def take(self, name: str) -> np.ndarray:
        """The column's blocks as one array (the blocks are dropped)."""
        return np.concatenate(self.blocks.pop(name))


def _copurchase_frame(rows: _Rows, item_ids: np.ndarray, codes: np.ndarray) -> pd.DataFrame:
    """item_copurchase from blocks of item, time, category, basket_count(_30d) and
    [rows, NEIGHBOURS] partner, together, together_30d and pmi."""
    items = rows.take("item")
    partner = rows.take("partner")
    has = partner >= 0
    safe = np.maximum(partner, 0)
    columns: dict[str, object] = {
        "item_id": item_ids[items],
        "item_code": codes[items],
        "category_code": rows.take("category").astype(np.float64),
        "basket_count": rows.take("basket_count").astype(np.float32),
        "basket_count_30d": rows.take("basket_count_30d").astype(np.float32),
    }
    # Column-major blocks: each column is a contiguous view, no copy (copy=False below).
    code_block = np.asfortranarray(np.where(has, codes[safe], np.nan))
    columns.update({f"cp_item_{k:02d}": code_block[:, k] for k in range(NEIGHBOURS)})
    ids = np.asarray(np.where(has, item_ids[safe], None), dtype=object)
    for k in range(NEIGHBOURS):  # a string column even where no row has a k-th neighbour
        columns[f"cp_id_{k:02d}"] = pd.array(ids[:, k], dtype="string")
    for name in ("cp_count", "cp_count_30d", "cp_pmi"):
        block = np.asfortranarray(np.where(has, rows.take(name), np.nan), dtype=np.float32)
        columns.update({f"{name}_{k:02d}": block[:, k] for k in range(NEIGHBOURS)})
    columns["event_timestamp"] = _utc(rows.take("time"))
    return pd.DataFrame(columns, copy=False)


def _complements_frame(rows: _Rows, item_ids: np.ndarray) -> pd.DataFrame:
    """category_complements from blocks of item, time and [rows, COMPLEMENTS] partner, lift."""
    partner = rows.take("partner")
    lift = np.asfortranarray(rows.take("lift"), dtype=np.float32)
    codes = np.asfortranarray(np.where(partner >= 0, partner, np.nan))
    return pd.DataFrame(
        {
            "item_id": item_ids[rows.take("item")],
            **{f"cc_category_{k:02d}": codes[:, k] for k in range(COMPLEMENTS)},
            **{f"cc_lift_{k:02d}": lift[:, k] for k in range(COMPLEMENTS)},
            "event_timestamp": _utc(rows.take("time")),
        },
        copy=False,
    )


def basket_tables(
    baskets: Baskets,
    item_ids: np.ndarray,
    category: np.ndarray,
    created: np.ndarray,
    snaps: np.ndarray,
) -> dict[str, pd.DataFrame]:
    """The two tables (module docstring) of `baskets`.

    Args:
        baskets: the log's baskets (`Baskets.of`), item indices into `item_ids`.
        category: each item's category code (the build's vocabulary, -1: none).
        created: each item's creation time (Unix seconds): its first row (moved earlier to its
            first basket when that comes first).
        snaps: the daily snapshot times (scoring.datagen.build.snapshot_times).
    """
    n_items = len(item_ids)
    item_ids = np.asarray(item_ids, dtype=object)
    category = np.asarray(category, dtype=np.int64)
    codes = item_codes(item_ids)
    first = np.full(n_items, np.iinfo(np.int64).max)
    np.minimum.at(first, baskets.item, baskets.item_t)
    created = np.minimum(np.asarray(created, dtype=np.int64), first)
    n_categories = int(category.max(initial=-1)) + 1

    # Creation rows: code and category, no basket yet.
    every = np.arange(n_items)
    copurchase, complements = _Rows.empty(), _Rows.empty()
    nothing = np.full((n_items, NEIGHBOURS), np.nan, dtype=np.float32)
    copurchase.add(
        item=every,
        time=created,
        category=category,
        basket_count=np.zeros(n_items, dtype=np.float32),
        basket_count_30d=np.zeros(n_items, dtype=np.float32),
        partner=np.full((n_items, NEIGHBOURS), -1, dtype=np.int32),
        cp_count=nothing,
        cp_count_30d=nothing,
        cp_pmi=nothing,
    )
    complements.add(
        item=every,
        time=created,
        partner=np.full((n_items, COMPLEMENTS), -1, dtype=np.int32),
        lift=np.full((n_items, COMPLEMENTS), np.nan, dtype=np.float32),
    )
    items = PairCounts(baskets)
    categories = PairCounts(baskets.by(category, n_categories))
    previous = int(snaps[0])
    for fit_at in fit_times(snaps):
        fit_at = int(fit_at)
        items.advance(fit_at)
        categories.advance(fit_at)
        hi = items.done
        if not hi:
            previous = fit_at
            continue
        # Items whose counts changed: bought in [previous - 30 days, fit), or in a basket
        # that grew since the previous fit.
        lo30 = baskets.before(fit_at - WINDOW_S)
        recent = baskets.item[baskets.before(previous - WINDOW_S) : hi]
        changed = np.union1d(recent, items.touched)
        partner, together, pmi = top_partners(
            items.pairs, changed, items.counts, items.n_baskets, NEIGHBOURS
        )
        window = baskets.matrix(slice(lo30, hi))
        count_30d = np.bincount(baskets.item[lo30:hi], minlength=n_items)
        window_pairs = (window.T.tocsr()[changed] @ window).tocsr()
        window_pairs.sort_indices()
        has = partner >= 0
        together_30d = np.zeros(partner.shape, dtype=np.float32)
        together_30d[has] = _lookup(window_pairs, np.nonzero(has)[0], partner[has])
        copurchase.add(
            item=changed,
            time=np.full(len(changed), fit_at),
            category=category[changed],
            basket_count=items.counts[changed].astype(np.float32),
            basket_count_30d=count_30d[changed].astype(np.float32),
            partner=partner.astype(np.int32),
            cp_count=together.astype(np.float32),
            cp_count_30d=together_30d,
            cp_pmi=pmi.astype(np.float32),
        )
        # Complements of every category seen so far, for every item of one created before.
        seen = np.nonzero(categories.counts > 0)[0]
        cat_partner, _, cat_lift = top_partners(
            categories.pairs, seen, categories.counts, categories.n_baskets, COMPLEMENTS
        )
        at = np.full(n_categories, -1, dtype=np.int64)
        at[seen] = np.arange(len(seen))
        live = np.nonzero((created < fit_at) & (category >= 0))[0]
        live = live[at[category[live]] >= 0]
        complements.add(
            item=live,
            time=np.full(len(live), fit_at),
            partner=cat_partner[at[category[live]]].astype(np.int32),
            lift=cat_lift[at[category[live]]].astype(np.float32),
        )
        previous = fit_at
    return {
        "item_copurchase": _copurchase_frame(copurchase, item_ids, codes),
        "category_complements": _complements_frame(complements, item_ids),
    }


__all__ = [
    "COMPLEMENTS",
    "NEIGHBOURS",
    "PAIR_PRIOR",
    "TABLES",
    "Baskets",
    "PairCounts",
    "basket_keys",
    "basket_tables",
    "smoothed_pmi",
    "top_partners",
]
