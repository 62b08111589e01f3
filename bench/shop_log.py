"""A generated shop log of any size in the documented import format (README, "Data in").

Shared by the benches that need a real shop's volume (shop_scale_bench.py, evaluate_bench.py).
The log: ~90 days of sessions; each session is one user's visit (users drawn with heavy-tailed,
log-normal activity: a few very heavy users, most with a handful of events), holding a few
*episodes*, one item each (Zipf-popular items, 60% of them from the user's favourite category):
an optional click (from a listing), one or more views, sometimes an add-to-cart and then a
purchase, whose `order_id` is the session. About 79% views, 12% clicks, 6% add-to-carts and
3% purchases, more traffic in the evening and on later days. Items carry a category, brand
and list price (no titles: each distinct title would be encoded by the sentence model), users a
segment, region, membership level, age bucket and sign-up time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY = 86_400
START = 1_760_000_000 // DAY * DAY  # a UTC midnight (2025-10-09)
EVENT_TYPES = ("view", "add_to_cart", "purchase", "click")
_VIEW, _CART, _BUY, _CLICK = range(4)


@dataclass(frozen=True, slots=True)
class ShopLog:
    """Sizes of a written log, for the bench's table."""

    events: int
    users: int
    items: int
    orders: int
    kinds: dict[str, int]


def _ids(prefix: str, width: int, codes: np.ndarray, n: int) -> pa.Array:
    """Plain string ids (`u00000042`), built in Arrow: no Python string per row."""
    names = pa.array([f"{prefix}{k:0{width}d}" for k in range(n)])
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), names).cast(pa.string())


def _pick(rng: np.random.Generator, cdf: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index drawn from the weights whose cumulative sums are `cdf`, within [lo, hi) each."""
    base = np.where(lo > 0, cdf[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(len(lo)) * (cdf[hi - 1] - base)
    return np.minimum(np.searchsorted(cdf, target, side="right"), hi - 1)


def write_shop_log(
    out: Path,
    events: int,
    users: int,
    items: int,
    seed: int = 1,
    days: int = 90,
    categories: int = 300,
) -> ShopLog:
    """Writes out/events.parquet, items.parquet and users.parquet (import format).

    Args:
        events: exactly this many events.
        users / items: the shop's users and items (not all need to appear).
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    # Items: Zipf popularity over a random permutation of the ids, categories Zipf-sized.
    item_pop = 1.0 / np.arange(1, items + 1) ** 1.0
    item_pop = item_pop[rng.permutation(items)]
    cat_weight = 1.0 / np.arange(1, categories + 1) ** 0.8
    item_cat = rng.choice(categories, items, p=cat_weight / cat_weight.sum())
    by_cat = np.argsort(item_cat, kind="stable")
    cat_cdf = np.cumsum(item_pop[by_cat])
    cat_lo = np.searchsorted(item_cat[by_cat], np.arange(categories), side="left")
    cat_hi = np.searchsorted(item_cat[by_cat], np.arange(categories), side="right")
    global_cdf = np.cumsum(item_pop)
    price = np.round(np.exp(rng.normal(3.0, 1.0, items)), 2)

    # Users: log-normal activity, a favourite category (among those with items).
    activity = np.exp(rng.normal(0.0, 1.6, users))
    user_cdf = np.cumsum(activity)
    stocked = np.flatnonzero(cat_hi > cat_lo)
    favourite = stocked[rng.integers(0, len(stocked), users)]

    # Episodes: click? + views + cart? + purchase?; ~2.1 events each. Draw a few more than
    # needed, in random order, and keep the first ones that hold `events` events.
    n_ep = int(events / 2.0) + 1000
    clicks = (rng.random(n_ep) < 0.25).astype(np.int64)
    views = rng.geometric(0.6, n_ep)
    carts = (rng.random(n_ep) < 0.12).astype(np.int64)
    buys = carts * (rng.random(n_ep) < 0.5)
    size = clicks + views + carts + buys
    n_ep = int(np.searchsorted(np.cumsum(size), events, side="left")) + 1
    clicks, views, carts, buys, size = (a[:n_ep] for a in (clicks, views, carts, buys, size))
    size[-1] -= int(size.sum()) - events  # trim the last episode to exactly `events`

    # Sessions: ~2.5 episodes each; a user, a day (traffic grows 50% over the period) and an
    # hour (evening peak).
    per_session = rng.geometric(0.4, n_ep)
    session = np.repeat(np.arange(n_ep), per_session)[:n_ep]
    n_sess = int(session[-1]) + 1
    s_user = np.searchsorted(user_cdf, rng.random(n_sess) * user_cdf[-1], side="right")
    s_user = np.minimum(s_user, users - 1)
    day = np.floor(days * 2 * (np.sqrt(1 + 1.25 * rng.random(n_sess)) - 1))  # density 1 + x/2
    hour = (rng.normal(19.0, 4.0, n_sess) % 24) * 3600
    s_start = START + day.astype(np.int64) * DAY + hour.astype(np.int64)
    first_ep = np.searchsorted(session, np.arange(n_sess), side="left")

    # Each episode's item: from the user's favourite category (60%) or the whole catalogue.
    ep_user = s_user[session]
    own = rng.random(n_ep) < 0.6
    cat = favourite[ep_user]
    item = np.empty(n_ep, dtype=np.int64)
    item[own] = by_cat[_pick(rng, cat_cdf, cat_lo[cat[own]], cat_hi[cat[own]])]
    n_other = int((~own).sum())
    item[~own] = _pick(rng, global_cdf, np.zeros(n_other, np.int64), np.full(n_other, items))

    # Events of each episode, in order: click, views, add_to_cart, purchase.
    ep = np.repeat(np.arange(n_ep), size)
    within = np.arange(events) - np.repeat(np.cumsum(size) - size, size)
    kind = np.full(events, _VIEW, dtype=np.int8)
    kind[within < clicks[ep]] = _CLICK
    cart_at = clicks[ep] + views[ep]
    kind[(within == cart_at) & (carts[ep] > 0)] = _CART
    kind[(within == cart_at + 1) & (buys[ep] > 0)] = _BUY
    step = 90 * (ep - first_ep[session[ep]]) + 25 * within
    seconds = s_start[session[ep]] + step + rng.integers(0, 20, events)
    bought = kind == _BUY
    quantity = np.where(bought, rng.geometric(0.7, events), np.nan)
    paid = price[item[ep]] * np.where(bought, rng.choice([1.0, 0.9, 0.8], events), 1.0)
    order = np.where(bought, session[ep], -1)

    order_codes, order_ix = np.unique(order[bought], return_inverse=True)
    order_names = pa.array([f"o{k:09d}" for k in order_codes])
    order_idx = np.full(events, -1, dtype=np.int64)
    order_idx[bought] = order_ix
    order_col = pa.DictionaryArray.from_arrays(
        pa.array(order_idx.astype(np.int32), mask=~bought), order_names
    ).cast(pa.string())
    time_order = np.argsort(seconds, kind="stable")
    table = pa.table(
        {
            "user_id": _ids("u", 8, ep_user[ep], users),
            "item_id": _ids("i", 7, item[ep], items),
            "event_type": pa.DictionaryArray.from_arrays(
                pa.array(kind), pa.array(list(EVENT_TYPES))
            ).cast(pa.string()),
            "timestamp": pa.array(seconds, pa.timestamp("s", tz="UTC")),
            "price": pa.array(np.round(paid, 2)),
            "quantity": pa.array(quantity, mask=~bought),
            "order_id": order_col,
        }
    ).take(pa.array(time_order))
    pq.write_table(table, out / "events.parquet", row_group_size=1_000_000)

    brand = rng.integers(0, max(items // 50, 1), items)
    pq.write_table(
        pa.table(
            {
                "item_id": _ids("i", 7, np.arange(items), items),
                "category": _ids("c", 4, item_cat, categories),
                "brand": _ids("b", 6, brand, max(items // 50, 1)),
                "price": pa.array(price),
            }
        ),
        out / "items.parquet",
    )
    # Sign-up: a third before the log, the rest on the day of their first session.
    first_seen = np.full(users, START + days * DAY, dtype=np.int64)
    np.minimum.at(first_seen, s_user, s_start)
    early = rng.random(users) < 1 / 3
    signup = np.where(early, START - rng.integers(DAY, 700 * DAY, users), first_seen - 600)
    pq.write_table(
        pa.table(
            {
                "user_id": _ids("u", 8, np.arange(users), users),
                "segment": _ids("s", 1, rng.integers(0, 4, users), 4),
                "region": _ids("r", 2, rng.integers(0, 12, users), 12),
                "membership_level": pa.array(rng.choice(4, users, p=[0.6, 0.25, 0.1, 0.05])),
                "age_bucket": _ids("a", 1, rng.integers(0, 7, users), 7),
                "signup_at": pa.array(signup, pa.timestamp("s", tz="UTC")),
            }
        ),
        out / "users.parquet",
    )
    counts = np.bincount(kind, minlength=4)
    return ShopLog(
        events=events,
        users=len(np.unique(ep_user)),
        items=len(np.unique(item)),
        orders=len(order_codes),
        kinds={name: int(counts[k]) for k, name in enumerate(EVENT_TYPES)},
    )
