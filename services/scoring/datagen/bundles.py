"""The bundle feature table (`bundle_stats`, features/bundle.py): point in time, vectorized.

A bundle gets one row when it appears (its `start_at`, or its first event when earlier or when
it has none, else the log's first snapshot), then one at each snapshot after that (full hours
and the log's end, scoring.datagen.build.snapshot_times(t, HOUR), like the activities: a young
bundle is ranked by its first hours' response). A row stamped T holds:

- its definition: items (their codes and category codes in the first `BUNDLE_SLOTS` slots),
  price against the sum of its items' prices, main category (the most common; ties: the first
  in the bundle's order), start and end (`FAR_FUTURE` when it has none);
- its items' statistics as of T: each item's newest `item_stats` row at or before T (those
  rows count events strictly before their own time), so nothing is recomputed here. An item
  without a row yet (not created) is not available: `all_in_stock` is 1 only when every item
  has a row with `in_stock` != 0;
- `internal_copurchase`: the mean over its item pairs of the smoothed PMI of the pair in
  baskets complete before T, log((n_ab + A) / (n_a * n_b / N + A)), A = 1 basket: 0 with no
  evidence, and a rare pair stays near 0. The baskets and the formula are the basket tables'
  (scoring.datagen.baskets, which has the reasoning): an order (`order_id`) of purchases, a
  purchase without one in its user's basket of its UTC day, counted once its last purchase is
  before T;
- `category_lift_mean`: the same smoothed PMI over its item pairs of different categories,
  counted on the baskets' distinct categories (denser than the item pairs: a new bundle of
  well-matched categories shows it from its first row), 0 when none; `same_category_share`:
  its item pairs within one category (substitutes rather than complements);
- `items_ctr_logit_mean`: the mean log-odds of its items' smoothed 30-day CTR (item_stats):
  their appeal;
- its own events (empty item_id, its bundle_id) in the windows [T - w, T), and all before T:
  `ctr_total` = (clicks + 20 p) / (impressions + 20), p every bundle's CTR before T
  (GLOBAL_CTR before any impression), so a bundle's own appeal shows once it has been shown;
  `ctr_total_logit` its log-odds;
- `ctr_prior_logit`: the CTR log-odds of bundles with its traits (its items' mean CTR
  log-odds, saving, category lift, co-purchase): a weighted ridge fit of the shown bundles'
  smoothed click log-odds on those traits, on their rows of the row's time (the latest time
  at or before it with `EB_MIN_BUNDLES` bundles shown; before any, log-odds of the prior
  above); `ctr_eb_logit`: the log-odds of (clicks + 100 q) / (impressions + 100), q its
  prior: a new bundle is ranked like bundles like it, not like the average one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.core.codes import item_codes
from scoring.datagen.baskets import PAIR_PRIOR, Baskets
from scoring.datagen.events import bundle_items

DAY = 86_400
BUNDLE_SLOTS = 10  # features/bundle.py BUNDLE_SLOTS
GLOBAL_CTR = 0.05
FAR_FUTURE = 4_102_444_800.0  # 2100-01-01, Unix seconds: "no end"
_SHIFT = np.int64(1) << np.int64(32)  # key = entity * 2**32 + Unix seconds
_ITEM_STATS = ("price", "rating", "in_stock", "sales_7d", "sales_30d", "ctr_30d")
CTR_PRIOR = 20.0  # impressions of prior weight on a bundle's all-time CTR
EB_PRIOR = 100.0  # impressions of prior weight on the traits' prior (ctr_eb_logit)
EB_MIN_BUNDLES = 8  # shown bundles needed to fit the traits' prior
EB_SPREAD = 0.1  # variance of bundles' CTR log-odds around the traits' prediction
EB_RIDGE = 0.01  # ridge penalty on the traits' slopes, per unit of weight


class _Counts:
    """Event counts of one stream keyed by entity index: in [t - window, t), or all before t."""

    def __init__(self, entity: np.ndarray, t: np.ndarray) -> None:
        self.keys = np.sort(entity.astype(np.int64) * _SHIFT + t.astype(np.int64))

    def total(self, entity: np.ndarray, t: np.ndarray, window: int | None = None) -> np.ndarray:
        base = entity.astype(np.int64) * _SHIFT
        hi = np.searchsorted(self.keys, base + t, side="left")
        lo = np.searchsorted(self.keys, base if window is None else base + t - window, side="left")
        return np.asarray(hi - lo, dtype=np.float64)


def _seconds(stamps: pd.Series) -> np.ndarray:
    """Unix seconds of a UTC datetime column (any resolution)."""
    return np.asarray((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1))


def _utc(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True))


def _times(bundles: pd.DataFrame, column: str) -> np.ndarray:
    """A time column as float Unix seconds (NaN when missing or absent)."""
    if column not in bundles or not len(bundles):
        return np.full(len(bundles), np.nan)
    values = pd.to_datetime(bundles[column], utc=True)
    seconds = values.astype("int64").to_numpy() // 1_000_000_000
    return np.where(values.isna().to_numpy(), np.nan, seconds.astype(np.float64))


def _copurchase_counts(
    baskets: Baskets, member_item: np.ndarray, pairs: pd.Index
) -> tuple[_Counts, _Counts]:
    """Baskets holding each member item / each wanted pair of members (`pairs`: keys
    a * members + b, a < b), timed as their basket. `member_item`: each member's item index in
    the baskets (-1: an item they do not know)."""
    n_members = len(member_item)
    member_of = np.full(baskets.n_items + 1, -1, dtype=np.int64)
    member_of[np.where(member_item >= 0, member_item, baskets.n_items)] = np.arange(n_members)
    member_of[baskets.n_items] = -1
    member = member_of[baskets.item]
    keep = member >= 0
    held = pd.DataFrame({"basket": baskets.basket[keep], "member": member[keep]})
    item_counts = _Counts(held["member"].to_numpy(), baskets.t[held["basket"].to_numpy()])
    both = held.merge(held, on="basket", suffixes=("_a", "_b"))
    both = both[both["member_a"] < both["member_b"]]
    key = both["member_a"].to_numpy(np.int64) * n_members + both["member_b"].to_numpy()
    pair = pairs.get_indexer(key)
    found = pair >= 0
    pair_counts = _Counts(pair[found], baskets.t[both["basket"].to_numpy()[found]])
    return item_counts, pair_counts


def _as_of(item_stats: pd.DataFrame, members: pd.Index) -> tuple[np.ndarray, pd.DataFrame]:
    """The member items' item_stats rows keyed (member * 2**32 + time), sorted, and the rows."""
    rows = item_stats[item_stats["item_id"].isin(members)]
    member = members.get_indexer(rows["item_id"].to_numpy())
    keys = member.astype(np.int64) * _SHIFT + _seconds(rows["event_timestamp"])
    order = np.argsort(keys, kind="stable")
    return keys[order], rows.iloc[order].reset_index(drop=True)


def _expand(
    per_group: np.ndarray, first: np.ndarray, group: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For rows of `group`, each owning `per_group[g]` consecutive entries of a flat array from
    `first[g]`: (the row of each entry, its position in the flat array), row-major."""
    rep = per_group[group]
    row = np.repeat(np.arange(len(group)), rep)
    within = np.arange(len(row)) - np.repeat(np.cumsum(rep) - rep, rep)
    return row, first[group][row] + within


def _reduce(values: np.ndarray, row: np.ndarray, n: int, how: str) -> np.ndarray:
    """Count / sum / mean / min of the non-NaN `values` of each row (NaN where none)."""
    ok = ~np.isnan(values)
    count = np.bincount(row[ok], minlength=n).astype(np.float64)
    if how == "count":
        return count
    if how == "min":
        out = np.full(n, np.inf)
        np.minimum.at(out, row[ok], values[ok])
    else:
        out = np.bincount(row[ok], weights=values[ok], minlength=n)
        out = out / np.maximum(count, 1) if how == "mean" else out
    return np.where(count > 0, out, np.nan)


def _logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), p clipped to [1e-4, 1 - 1e-4]: a rate on the scale clicks add up on
    (a network reads a CTR of 0.02 against 0.04 as a step of 0.7, not of 0.02)."""
    q = np.clip(p, 1e-4, 1 - 1e-4)
    return np.asarray(np.log(q / (1 - q)))


def _main_category(codes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per bundle: the most common known category code (-1: none; ties: the first in the
    bundle's order) and the number of distinct known ones."""
    main = np.full(len(codes), -1, dtype=np.int64)
    distinct = np.zeros(len(codes), dtype=np.float64)
    for b, values in enumerate(codes):
        known = [int(c) for c in values if c >= 0]
        if known:
            counts = {c: known.count(c) for c in dict.fromkeys(known)}
            main[b] = max(counts, key=counts.__getitem__)
            distinct[b] = len(counts)
    return main, distinct


def _eb_prior(
    bt: np.ndarray,
    traits: np.ndarray,
    imps: np.ndarray,
    clicks: np.ndarray,
    fallback: np.ndarray,
) -> np.ndarray:
    """Per row: the log-odds of a bundle's CTR predicted from its traits, by a ridge-weighted
    least-squares fit of the smoothed click log-odds of the bundles shown before the row's time
    (their rows at the latest time at or before it with at least EB_MIN_BUNDLES of them: each
    row counts events strictly before its own time) on those traits; weights: impressions
    against the between-bundle spread (EB_SPREAD). `fallback` where no fit exists yet."""
    out = np.asarray(fallback, dtype=np.float64).copy()
    if not len(bt):
        return out
    x = np.column_stack([np.ones(len(bt)), traits])
    penalty = np.diag([0.0] + [1.0] * traits.shape[1])
    times = np.unique(bt)
    order = np.argsort(bt, kind="stable")
    sorted_bt = bt[order]
    bounds = np.searchsorted(sorted_bt, np.append(times, np.iinfo(np.int64).max), side="left")
    beta: np.ndarray | None = None
    for k in range(len(times)):
        rows = order[bounds[k] : bounds[k + 1]]
        shown = rows[imps[rows] > 0]
        if len(shown) >= EB_MIN_BUNDLES:
            p = (clicks[shown] + 0.5) / (imps[shown] + 1.0)
            y = np.log(p / (1 - p))
            w = 1.0 / (1.0 / (imps[shown] * p * (1 - p)) + EB_SPREAD)
            xs = x[shown]
            gram = xs.T @ (xs * w[:, None]) + penalty * w.sum() * EB_RIDGE
            beta = np.linalg.solve(gram, xs.T @ (w * y))
        if beta is not None:
            out[rows] = np.clip(x[rows] @ beta, -9.0, 9.0)
    return out


def bundle_stats(
    bundles: pd.DataFrame | None,
    events: pd.DataFrame,
    t: np.ndarray,
    has_item: np.ndarray,
    snaps: np.ndarray,
    item_stats: pd.DataFrame,
    baskets: Baskets,
    item_ids: pd.Index,
) -> pd.DataFrame:
    """The bundle_stats table (no rows, with its columns, when there are no bundles).

    Args:
        bundles: the log's bundles table (bundle_id, items "i1|i2", bundle_price, start_at,
            end_at), or None.
        events: the log's events (bundle_id is an optional column).
        t: event times (Unix seconds); has_item: events on an item.
        snaps: the snapshot times (scoring.datagen.build.snapshot_times; the build passes
            hourly ones).
        item_stats: the build's item_stats table (item_id, event_timestamp, category, price,
            rating, in_stock, sales_7d, sales_30d, ctr_30d).
        baskets: the build's baskets (scoring.datagen.baskets.Baskets), over `item_ids`.
    """
    table = pd.DataFrame(columns=["bundle_id", "items"]) if bundles is None else bundles
    table = table.drop_duplicates("bundle_id", keep="last")
    parts = [list(dict.fromkeys(i.strip() for i in p if i.strip())) for p in bundle_items(table)]
    table = table.iloc[[k for k, p in enumerate(parts) if p]].reset_index(drop=True)
    parts = [p for p in parts if p]
    ids = pd.Index(table["bundle_id"].astype(str), dtype=object)
    nb = len(ids)

    # Membership: the bundles' items, bundle-major, as indices into `members`.
    n_members = np.array([len(p) for p in parts], dtype=np.int64)
    m_first = np.cumsum(n_members) - n_members
    flat = pd.Index([i for p in parts for i in p], dtype=object)
    members = pd.Index(pd.unique(flat), dtype=object)
    m_item = members.get_indexer(flat)
    items_of = [m_item[m_first[b] : m_first[b] + n_members[b]] for b in range(nb)]
    # Category codes are catalogue values: the item's first item_stats row.
    category = item_stats.drop_duplicates("item_id").set_index("item_id")["category"]
    m_category = category.reindex(members).fillna(-1).to_numpy(dtype=np.int64)
    main, n_categories = _main_category([m_category[its] for its in items_of])
    # Pairs of the bundles' items, bundle-major, as indices into `pairs` (keys a * M + b).
    pair_keys = [
        min(a, c) * len(members) + max(a, c)
        for its in items_of
        for x, a in enumerate(its.tolist())
        for c in its[x + 1 :].tolist()
    ]
    n_pairs = n_members * (n_members - 1) // 2
    p_first = np.cumsum(n_pairs) - n_pairs
    pairs = pd.Index(pd.unique(np.asarray(pair_keys, dtype=np.int64)))
    p_index = pairs.get_indexer(np.asarray(pair_keys, dtype=np.int64))

    # The bundle's own events: on no item, with its bundle_id.
    kind = events["event_type"].to_numpy()
    b_ev = np.full(len(events), -1, dtype=np.int64)
    if "bundle_id" in events.columns and nb:
        no_item = np.flatnonzero(~has_item)
        b_ev[no_item] = ids.get_indexer(events["bundle_id"].to_numpy(dtype=object)[no_item])
    on_bundle = b_ev >= 0
    first_event = pd.Series(t[on_bundle]).groupby(b_ev[on_bundle]).min().reindex(range(nb))
    start, end = _times(table, "start_at"), _times(table, "end_at")
    created = np.fmin(start, first_event.to_numpy(dtype=np.float64))
    created = np.nan_to_num(created, nan=float(snaps[0])).astype(np.int64)
    start = np.where(np.isnan(start), created, start)
    end = np.where(np.isnan(end), FAR_FUTURE, end)

    # Rows: one at creation, then one per snapshot after it.
    be, bt = np.repeat(np.arange(nb), len(snaps)), np.tile(snaps, nb)
    live = bt > created[be]
    be = np.concatenate([np.arange(nb), be[live]])
    bt = np.concatenate([created, bt[live]]).astype(np.int64)
    order = np.lexsort((bt, be))
    be, bt = be[order], bt[order]
    n = len(be)
    size = n_members[be]

    # Each item's newest item_stats row at or before the row's time.
    r_of, entry = _expand(n_members, m_first, be)
    item = m_item[entry]
    keys, item_rows = _as_of(item_stats, members)
    pos = np.searchsorted(keys, item.astype(np.int64) * _SHIFT + bt[r_of], side="right") - 1
    at = np.maximum(pos, 0)
    found = (pos >= 0) & (keys[at] // _SHIFT == item) if len(keys) else np.zeros(len(pos), bool)
    stat = {
        name: np.where(found, item_rows[name].to_numpy(np.float64)[at], np.nan)
        if len(keys)
        else np.full(len(item), np.nan)
        for name in _ITEM_STATS
    }
    available = _reduce(np.where(found & (stat["in_stock"] != 0), 1.0, np.nan), r_of, n, "count")
    parts_price = np.where(
        _reduce(stat["price"], r_of, n, "count") == size,
        _reduce(stat["price"], r_of, n, "sum"),
        np.nan,
    )
    listed = (
        table["bundle_price"].to_numpy(np.float64)
        if "bundle_price" in table
        else np.full(nb, np.nan)
    )
    price = np.where(np.isnan(listed[be]), parts_price, listed[be])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(parts_price > 0, price / parts_price, np.nan)

    # Co-purchase: the smoothed PMI of each of its item pairs in baskets before the row.
    item_counts, pair_counts = _copurchase_counts(baskets, item_ids.get_indexer(members), pairs)
    pr_of, p_entry = _expand(n_pairs, p_first, be)
    pair = p_index[p_entry]
    pair_at = bt[pr_of]
    n_ab = pair_counts.total(pair, pair_at)
    n_a = item_counts.total(pairs.to_numpy()[pair] // max(len(members), 1), pair_at)
    n_b = item_counts.total(pairs.to_numpy()[pair] % max(len(members), 1), pair_at)
    n_all = np.searchsorted(baskets.t, pair_at, side="left").astype(np.float64)
    expected = n_a * n_b / np.maximum(n_all, 1.0)
    pmi = np.log((n_ab + PAIR_PRIOR) / (expected + PAIR_PRIOR))
    copurchase = np.nan_to_num(_reduce(pmi, pr_of, n, "mean"), nan=0.0)

    # The same over its items' categories: the smoothed log-lift of each pair of different
    # categories in baskets before the row (denser than the item pairs: a new bundle of
    # well-matched categories shows it from its first row); and the share of its item pairs
    # in one category (substitutes).
    n_cat = int(max(m_category.max(initial=-1), category.to_numpy(np.float64).max(initial=-1)) + 1)
    cat_of_item = category.reindex(item_ids).fillna(-1).to_numpy(dtype=np.int64)
    a_cat = m_category[pairs.to_numpy() // max(len(members), 1)]
    b_cat = m_category[pairs.to_numpy() % max(len(members), 1)]
    differ = (a_cat >= 0) & (b_cat >= 0) & (a_cat != b_cat)
    cat_keys = np.minimum(a_cat, b_cat) * max(n_cat, 1) + np.maximum(a_cat, b_cat)
    cat_pairs = pd.Index(pd.unique(cat_keys[differ]))
    cat_counts, cat_pair_counts = _copurchase_counts(
        baskets.by(cat_of_item, max(n_cat, 1)), np.arange(max(n_cat, 1)), cat_pairs
    )
    row_differ = differ[pair]
    cp = cat_pairs.get_indexer(cat_keys[pair][row_differ])
    at_c = pair_at[row_differ]
    c_ab = cat_pair_counts.total(cp, at_c)
    c_a = cat_counts.total(a_cat[pair][row_differ], at_c)
    c_b = cat_counts.total(b_cat[pair][row_differ], at_c)
    lift = np.full(len(pair), np.nan)
    lift[row_differ] = np.log(
        (c_ab + PAIR_PRIOR) / (c_a * c_b / np.maximum(n_all[row_differ], 1.0) + PAIR_PRIOR)
    )
    category_lift = np.nan_to_num(_reduce(lift, pr_of, n, "mean"), nan=0.0)
    known_pair = (a_cat[pair] >= 0) & (b_cat[pair] >= 0)
    same = np.where(known_pair, (a_cat[pair] == b_cat[pair]).astype(np.float64), np.nan)
    same_category = np.nan_to_num(_reduce(same, pr_of, n, "mean"), nan=0.0)

    mine = np.flatnonzero(on_bundle)

    def events_of(event: str) -> _Counts:
        sel = mine[kind[mine] == event]
        return _Counts(b_ev[sel], t[sel])

    impressions, clicks, purchases = (events_of(e) for e in ("impression", "click", "purchase"))
    imps30, clicks30 = impressions.total(be, bt, 30 * DAY), clicks.total(be, bt, 30 * DAY)
    imps_all, clicks_all = impressions.total(be, bt), clicks.total(be, bt)
    # The all-time CTR, shrunk towards every bundle's CTR before the row (GLOBAL_CTR before
    # any): the bundle's own appeal, price and fit, once it has been shown.
    shown = np.sort(t[mine[kind[mine] == "impression"]])
    clicked = np.sort(t[mine[kind[mine] == "click"]])
    n_shown = np.searchsorted(shown, bt, side="left")
    n_clicked = np.searchsorted(clicked, bt, side="left")
    prior = np.where(n_shown > 0, n_clicked / np.maximum(n_shown, 1), GLOBAL_CTR)
    ctr_total = (clicks_all + CTR_PRIOR * prior) / (imps_all + CTR_PRIOR)
    # A new bundle's expected CTR from bundles like it: an empirical-Bayes prior fitted on the
    # bundles' rows of the row's time (their counts before it) against their traits: its
    # items' CTR, saving, category lift and co-purchase (a new bundle's best guess; a shown
    # one's own clicks soon outweigh it in ctr_eb_logit).
    traits = np.column_stack(
        [
            np.nan_to_num(
                _reduce(_logit(stat["ctr_30d"]), r_of, n, "mean"),
                nan=_logit(np.array([GLOBAL_CTR]))[0],
            ),
            np.nan_to_num(1.0 - ratio, nan=0.0),
            category_lift,
            copurchase,
        ]
    )
    prior_logit = _eb_prior(bt, traits, imps_all, clicks_all, _logit(prior))
    eb_prior = 1.0 / (1.0 + np.exp(-prior_logit))
    ctr_eb = (clicks_all + EB_PRIOR * eb_prior) / (imps_all + EB_PRIOR)

    codes = item_codes(members.to_numpy(dtype=object)) if len(members) else np.zeros(0)
    slot_item = np.full((nb, BUNDLE_SLOTS), -1.0)
    slot_category = np.full((nb, BUNDLE_SLOTS), -1.0)
    for b, its in enumerate(items_of):
        slot_item[b, : len(its[:BUNDLE_SLOTS])] = codes[its[:BUNDLE_SLOTS]]
        slot_category[b, : len(its[:BUNDLE_SLOTS])] = m_category[its[:BUNDLE_SLOTS]]

    def f32(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    return pd.DataFrame(
        {
            "bundle_id": ids.to_numpy(dtype=object)[be],
            "n_items": f32(size),
            "bundle_price": f32(price),
            "parts_price": f32(parts_price),
            "price_ratio": f32(ratio),
            "saving_pct": f32(1.0 - ratio),
            "main_category": main[be],
            "n_categories": f32(n_categories[be]),
            "items_sales_7d_mean": f32(_reduce(stat["sales_7d"], r_of, n, "mean")),
            "items_sales_30d_min": f32(_reduce(stat["sales_30d"], r_of, n, "min")),
            "items_sales_30d_mean": f32(_reduce(stat["sales_30d"], r_of, n, "mean")),
            "items_rating_mean": f32(_reduce(stat["rating"], r_of, n, "mean")),
            "items_ctr_logit_mean": f32(_reduce(_logit(stat["ctr_30d"]), r_of, n, "mean")),
            "all_in_stock": (available == size).astype(np.int64),
            "in_stock_share": f32(available / np.maximum(size, 1)),
            "internal_copurchase": f32(copurchase),
            "category_lift_mean": f32(category_lift),
            "same_category_share": f32(same_category),
            "impressions_7d": f32(impressions.total(be, bt, 7 * DAY)),
            "clicks_7d": f32(clicks.total(be, bt, 7 * DAY)),
            "ctr_30d": f32((clicks30 + GLOBAL_CTR * 20) / (imps30 + 20)),
            "purchases_30d": f32(purchases.total(be, bt, 30 * DAY)),
            "impressions_total": f32(imps_all),
            "clicks_total": f32(clicks_all),
            "ctr_total": f32(ctr_total),
            "ctr_total_logit": f32(_logit(ctr_total)),
            "ctr_prior_logit": f32(prior_logit),
            "ctr_eb_logit": f32(_logit(ctr_eb)),
            "start_ts": start[be].astype(np.float64),
            "end_ts": end[be].astype(np.float64),
            **{f"bundle_item_{k:02d}": slot_item[be, k] for k in range(BUNDLE_SLOTS)},
            **{f"bundle_category_{k:02d}": slot_category[be, k] for k in range(BUNDLE_SLOTS)},
            "event_timestamp": _utc(bt),
        }
    )


__all__ = ["BUNDLE_SLOTS", "FAR_FUTURE", "bundle_stats"]
