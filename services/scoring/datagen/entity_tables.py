"""The per-entity feature tables: functions of some entities' events and the global context.

item_stats (items), user_behavior and user_affinity (users), activity_stats (campaigns) and the
labelled impressions (per user): each takes the events of a set of entities (all of them, or
one bucket of them on Spark: scoring.datagen.spark_build) and what is global to the log
(snapshot times, the catalogue's category codes, the campaigns), so that the pandas build
(scoring.datagen.build) and the Spark build run the same code. The window primitive
(`Windows`) and the time constants live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.datagen.events import ORACLE_COLUMNS

Progress = Callable[[str], None]  # called with the name of each build step as it starts

DAY = 86_400
HOUR = 3600
WINDOWS = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
AFFINITY_SLOTS = 16  # category affinity vector length; category code % 16 picks the slot
# Per-category view and impression counts look further back than the 30-day affinity: a
# shopper's category tastes change slowly, and a few weeks hold only a few dozen views.
HISTORY_S = 90 * DAY
GLOBAL_CTR = 0.05
CLICK_WINDOW_S = 30 * 60  # a click belongs to the user's last impression of it within 30 min
PURCHASE_WINDOW_S = DAY
SHIFT = np.int64(1) << np.int64(32)  # key = entity * 2**32 + Unix seconds
# (entity, snapshot) pairs computed at once in the user steps (a bound on their memory).
_PAIRS_PER_BLOCK = 4_000_000


class Windows:
    """Window sums over one event stream keyed by entity index, for many (entity, time) pairs."""

    def __init__(self, entity: np.ndarray, t: np.ndarray, weight: np.ndarray | None = None):
        keys = entity.astype(np.int64) * SHIFT + t.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        w = np.ones(len(keys)) if weight is None else np.asarray(weight, dtype=np.float64)[order]
        self.cum = np.concatenate([[0.0], np.cumsum(w)])

    def _pos(self, entity: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.asarray(
            np.searchsorted(self.keys, entity.astype(np.int64) * SHIFT + t, side="left")
        )

    def total(self, entity: np.ndarray, t: np.ndarray, window: int) -> np.ndarray:
        """Sum of weights of events with time in [t - window, t)."""
        return np.asarray(self.cum[self._pos(entity, t)] - self.cum[self._pos(entity, t - window)])

    def last_before(self, entity: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Time of the entity's last event before t; NaN when none."""
        pos = self._pos(entity, t)
        prev = np.clip(pos - 1, 0, max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.full(len(entity), np.nan)
        same = (pos > 0) & (self.keys[prev] // SHIFT == entity)
        return np.where(same, (self.keys[prev] % SHIFT).astype(np.float64), np.nan)


def to_utc(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True))


def to_seconds(values: pd.Series) -> np.ndarray:
    return np.asarray(pd.to_datetime(values, utc=True).astype("int64") // 1_000_000_000)


@dataclass(frozen=True, slots=True)
class EventArrays:
    """The event log's columns the per-entity steps read, as arrays (one entry per event)."""

    t: np.ndarray  # Unix seconds
    kind: np.ndarray  # event_type
    has_item: np.ndarray  # an event on an item (else on a campaign or a bundle)
    qty: np.ndarray  # units (1 when missing)
    spend: np.ndarray  # price x quantity on purchases, else 0

    @classmethod
    def of(cls, ev: pd.DataFrame) -> EventArrays:
        t = to_seconds(ev["timestamp"])
        kind = ev["event_type"].to_numpy()
        qty = ev["quantity"].fillna(1).to_numpy(dtype=np.float64)
        spend = np.where(kind == "purchase", ev["price"].fillna(0).to_numpy() * qty, 0.0)
        return cls(t, kind, ev["item_id"].to_numpy() != "", qty, spend)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Per item (by index into `item_ids`): creation time and the catalogue attributes."""

    item_ids: pd.Index
    created: np.ndarray  # int64 seconds: the catalogue's created_at, else the first event
    category: np.ndarray  # int64 codes (-1: none)
    brand: np.ndarray
    price: np.ndarray  # float64: list price, else the median purchase price
    rating: np.ndarray | None
    stock: np.ndarray | None


def item_stats(
    cat: Catalogue,
    entities: np.ndarray,
    i: np.ndarray,
    ev: EventArrays,
    snaps: np.ndarray,
    forever: int,
) -> pd.DataFrame:
    """item_stats of the items `entities` (indices into cat.item_ids) from events holding at
    least all of theirs (`i`: each event's item index, -1 when none)."""
    ie, it = np.repeat(entities, len(snaps)), np.tile(snaps, len(entities))
    created = cat.created
    live = it > created[ie]
    # One row at creation (catalogue attributes, aggregates 0), then one per snapshot.
    ie = np.concatenate([entities, ie[live]])
    it = np.concatenate([created[entities], it[live]])
    t, kind, qty = ev.t, ev.kind, ev.qty
    on_item = ev.has_item
    imp = Windows(i[on_item & (kind == "impression")], t[on_item & (kind == "impression")])
    clk = Windows(i[on_item & (kind == "click")], t[on_item & (kind == "click")])
    vw = Windows(i[on_item & (kind == "view")], t[on_item & (kind == "view")])
    cart = Windows(i[on_item & (kind == "add_to_cart")], t[on_item & (kind == "add_to_cart")])
    pm = on_item & (kind == "purchase")
    buy = Windows(i[pm], t[pm])
    sold = Windows(i[pm], t[pm], qty[pm])
    imps7, clicks7 = imp.total(ie, it, 7 * DAY), clk.total(ie, it, 7 * DAY)
    imps30, clicks30 = imp.total(ie, it, 30 * DAY), clk.total(ie, it, 30 * DAY)
    rating, stock = cat.rating, cat.stock
    return pd.DataFrame(
        {
            "item_id": cat.item_ids.to_numpy(dtype=object)[ie],
            "category": cat.category[ie],
            "brand": cat.brand[ie],
            "price": cat.price[ie].astype(np.float32),
            "launch_ts": created[ie].astype(np.float64),
            "rating": (np.full(len(ie), np.nan) if rating is None else rating[ie]).astype(
                np.float32
            ),
            "in_stock": np.ones(len(ie), dtype=np.int64) if stock is None else stock[ie],
            "purchases_total": buy.total(ie, it, forever).astype(np.float32),
            "impressions_7d": imps7.astype(np.float32),
            "clicks_7d": clicks7.astype(np.float32),
            "ctr_7d": ((clicks7 + GLOBAL_CTR * 20) / (imps7 + 20)).astype(np.float32),
            "ctr_30d": ((clicks30 + GLOBAL_CTR * 20) / (imps30 + 20)).astype(np.float32),
            "sales_7d": sold.total(ie, it, 7 * DAY).astype(np.float32),
            "sales_30d": sold.total(ie, it, 30 * DAY).astype(np.float32),
            "conversion_30d": (
                (buy.total(ie, it, 30 * DAY) + 0.02 * 10) / (vw.total(ie, it, 30 * DAY) + 10)
            ).astype(np.float32),
            "cart_rate_30d": (
                (cart.total(ie, it, 30 * DAY) + 0.1 * 10) / (vw.total(ie, it, 30 * DAY) + 10)
            ).astype(np.float32),
            "event_timestamp": to_utc(it),
        }
    )


def user_tables(
    user_ids: pd.Index,
    u: np.ndarray,
    i: np.ndarray,
    ev: EventArrays,
    category: np.ndarray,
    snaps: np.ndarray,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """user_behavior and user_affinity of the users `user_ids` from their events.

    Args:
        u: each event's index into `user_ids`.
        i: each event's item index (-1 when none); `category` is indexed by it.
        snaps: the daily snapshot times of the whole log.
    """
    step = progress or (lambda _: None)
    ue, ut = _active_user_snapshots(u, ev.t, len(user_ids), snaps)
    behaviour = _user_behaviour(user_ids, u, ev.t, ev.kind, ev.spend, ue, ut)
    step("users: category affinity and recency")
    affinity = _user_affinity(user_ids, u, ev.t, i, ev.kind, ev.has_item, category, ue, ut)
    return behaviour, affinity


def forever_window(t: np.ndarray) -> int:
    """A window longer than the log: "every earlier event"."""
    return int(t.max()) + 1 - int(t.min()) + DAY


def _active_user_snapshots(
    u: np.ndarray, t: np.ndarray, n_users: int, snaps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The (user, snapshot) pairs with an event in the 30 days before the snapshot (the daily
    job emits active users only), user-major; a block of users at a time, so that the pairs of
    a large shop's every user and every day are never all held at once."""
    anything = Windows(u, t)
    users_per_block = max(_PAIRS_PER_BLOCK // max(len(snaps), 1), 1)
    parts_e, parts_t = [], []
    for lo in range(0, n_users, users_per_block):
        block = np.arange(lo, min(lo + users_per_block, n_users))
        ue, ut = np.repeat(block, len(snaps)), np.tile(snaps, len(block))
        active = anything.total(ue, ut, 30 * DAY) > 0
        parts_e.append(ue[active])
        parts_t.append(ut[active])
    if not parts_e:
        return np.zeros(0, dtype=np.int64), snaps[:0]
    return np.concatenate(parts_e), np.concatenate(parts_t)


def _user_behaviour(
    user_ids: pd.Index,
    u: np.ndarray,
    t: np.ndarray,
    kind: np.ndarray,
    spend: np.ndarray,
    ue: np.ndarray,
    ut: np.ndarray,
) -> pd.DataFrame:
    """user_behavior: per active (user, snapshot), event counts and spend over the windows."""
    behaviour: dict[str, object] = {"user_id": user_ids.to_numpy(dtype=object)[ue]}
    per_kind = {
        "views": Windows(u[kind == "view"], t[kind == "view"]),
        "clicks": Windows(u[kind == "click"], t[kind == "click"]),
        "carts": Windows(u[kind == "add_to_cart"], t[kind == "add_to_cart"]),
        "purchases": Windows(u[kind == "purchase"], t[kind == "purchase"]),
        "spend": Windows(u[kind == "purchase"], t[kind == "purchase"], spend[kind == "purchase"]),
    }
    for name, win in per_kind.items():
        for suffix, seconds in WINDOWS.items():
            behaviour[f"{name}_{suffix}"] = win.total(ue, ut, seconds).astype(np.float32)
    imps_u = Windows(u[kind == "impression"], t[kind == "impression"]).total(ue, ut, 30 * DAY)
    clicks_u = np.asarray(behaviour["clicks_30d"], dtype=np.float64)
    purchases_u = np.asarray(behaviour["purchases_30d"], dtype=np.float64)
    behaviour["ctr_30d"] = ((clicks_u + GLOBAL_CTR * 20) / (imps_u + 20)).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        aov = np.asarray(behaviour["spend_30d"], dtype=np.float64) / purchases_u
    behaviour["avg_order_value_30d"] = np.where(purchases_u > 0, aov, np.nan).astype(np.float32)
    behaviour["event_timestamp"] = to_utc(ut)
    # copy=False: the columns are fresh arrays; a consolidated copy would double the peak.
    return pd.DataFrame(behaviour, copy=False)


def _user_affinity(
    user_ids: pd.Index,
    u: np.ndarray,
    t: np.ndarray,
    i: np.ndarray,
    kind: np.ndarray,
    has_item: np.ndarray,
    category: np.ndarray,
    ue: np.ndarray,
    ut: np.ndarray,
) -> pd.DataFrame:
    """user_affinity: per active (user, snapshot), the category-slot shares of engagement
    (30 days), views and impressions by slot (90 days), the top slot and recency.

    The [user snapshots x slots] grid is computed a block of snapshots at a time (a shop of
    10M events has tens of millions of user snapshots): only the float32 results are whole.
    """

    def slot_windows(sel: np.ndarray, weight: np.ndarray | None = None) -> Windows:
        """Windows over the `sel` item events, keyed by (user, category slot)."""
        code = np.full(len(t), -1, dtype=np.int64)
        code[sel] = category[i[sel]]
        keep = code >= 0
        slot = code[keep] % AFFINITY_SLOTS
        w = None if weight is None else weight[keep]
        return Windows(u[keep] * AFFINITY_SLOTS + slot, t[keep], w)

    engaged = has_item & np.isin(kind, ["view", "click", "add_to_cart", "purchase"])
    weight = pd.Series(kind).map({"view": 1.0, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0})
    engagement = slot_windows(engaged, weight.fillna(0.0).to_numpy())
    histories = {
        "views_90d": slot_windows(has_item & (kind == "view")),
        "impressions_90d": slot_windows(has_item & (kind == "impression")),
    }
    n = len(ue)
    # One contiguous row per output column, filled block by block.
    share_out = np.empty((AFFINITY_SLOTS, n), dtype=np.float32)
    history_out = {name: np.empty((AFFINITY_SLOTS, n), dtype=np.float32) for name in histories}
    top = np.empty(n, dtype=np.int64)
    top_share = np.empty(n, dtype=np.float32)
    rows_per_block = max(_PAIRS_PER_BLOCK // AFFINITY_SLOTS, 1)
    slots = np.arange(AFFINITY_SLOTS)
    for lo in range(0, n, rows_per_block):
        hi = min(lo + rows_per_block, n)
        grid_e = np.repeat(ue[lo:hi] * AFFINITY_SLOTS, AFFINITY_SLOTS) + np.tile(slots, hi - lo)
        grid_t = np.repeat(ut[lo:hi], AFFINITY_SLOTS)
        counts = engagement.total(grid_e, grid_t, 30 * DAY).reshape(hi - lo, AFFINITY_SLOTS)
        for name, win in histories.items():
            block = win.total(grid_e, grid_t, HISTORY_S).reshape(hi - lo, AFFINITY_SLOTS)
            history_out[name][:, lo:hi] = block.astype(np.float32).T
        total = counts.sum(axis=1)
        share = (counts + 1.0 / AFFINITY_SLOTS) / (total[:, None] + 1.0)
        share_out[:, lo:hi] = share.astype(np.float32).T
        top[lo:hi] = np.where(total > 0, counts.argmax(axis=1), -1)
        top_share[lo:hi] = np.where(total > 0, share.max(axis=1), np.nan).astype(np.float32)
    seen = Windows(u[np.isin(kind, ["view", "click"])], t[np.isin(kind, ["view", "click"])])
    bought = Windows(u[kind == "purchase"], t[kind == "purchase"])
    return pd.DataFrame(
        {
            "user_id": user_ids.to_numpy(dtype=object)[ue],
            **{f"affinity_{slot:02d}": share_out[slot] for slot in range(AFFINITY_SLOTS)},
            **{
                f"{name}_{slot:02d}": values[slot]
                for name, values in history_out.items()
                for slot in range(AFFINITY_SLOTS)
            },
            "top_category": top,
            "top_category_share": top_share,
            "days_since_last_view": ((ut - seen.last_before(ue, ut)) / DAY).astype(np.float32),
            "days_since_last_purchase": ((ut - bought.last_before(ue, ut)) / DAY).astype(
                np.float32
            ),
            "event_timestamp": to_utc(ut),
        },
        copy=False,  # the columns are rows of the blocks above: no second copy of them
    )


@dataclass(frozen=True, slots=True)
class Activities:
    """Per campaign (by index into `ids`): its type, discount, target categories and dates."""

    ids: pd.Index
    type_code: np.ndarray
    discount: np.ndarray
    first: np.ndarray  # target category codes
    second: np.ndarray
    start: np.ndarray  # Unix seconds
    end: np.ndarray


def activity_stats(
    acts: Activities,
    entities: np.ndarray,
    a: np.ndarray,
    ev: EventArrays,
    snaps: np.ndarray,
    forever: int,
) -> pd.DataFrame:
    """activity_stats of the campaigns `entities` (indices into acts.ids) from events holding
    at least all of theirs (`a`: each event's campaign index, -1 when none; `snaps`: the
    hourly snapshots)."""
    t, kind, has_item = ev.t, ev.kind, ev.has_item
    start, end = acts.start, acts.end
    # Campaigns are announced a day before they start.
    announced = start - DAY
    on_act = (a >= 0) & ~has_item
    ae, at = np.repeat(entities, len(snaps)), np.tile(snaps, len(entities))
    # After the announcement: hourly until a day after the end, then daily (only the windows
    # still change).
    recent = (at <= end[ae] + DAY) | (at % DAY == 0) | (at == snaps[-1])
    live = (at > announced[ae]) & recent if len(entities) else np.zeros(0, dtype=bool)
    # One row when announced, then one per snapshot.
    ae = np.concatenate([entities, ae[live]])
    at = np.concatenate([announced[entities], at[live]]).astype(np.int64)
    imp = Windows(a[on_act & (kind == "impression")], t[on_act & (kind == "impression")])
    joined = (a >= 0) & ((on_act & (kind == "click")) | (kind == "purchase"))
    part = Windows(a[joined], t[joined])
    imps7 = imp.total(ae, at, 7 * DAY)
    part7 = part.total(ae, at, 7 * DAY)
    # Every earlier event: a campaign's appeal does not fade, and most run for days only.
    imps_all, part_all = imp.total(ae, at, forever), part.total(ae, at, forever)
    return pd.DataFrame(
        {
            "activity_id": acts.ids.to_numpy(dtype=object)[ae],
            "activity_type": acts.type_code[ae],
            "discount_pct": acts.discount[ae],
            "target_category": acts.first[ae],
            "target_category_2": acts.second[ae],
            "start_ts": start[ae].astype(np.float64),
            "end_ts": end[ae].astype(np.float64),
            "impressions_1d": imp.total(ae, at, DAY).astype(np.float32),
            "participants_1d": part.total(ae, at, DAY).astype(np.float32),
            "participants_7d": part7.astype(np.float32),
            "participation_rate_7d": ((part7 + GLOBAL_CTR * 20) / (imps7 + 20)).astype(np.float32),
            "impressions_total": imps_all.astype(np.float32),
            "participation_rate_total": ((part_all + GLOBAL_CTR * 20) / (imps_all + 20)).astype(
                np.float32
            ),
            "event_timestamp": to_utc(at),
        }
    )


def labels(ev: pd.DataFrame, t: np.ndarray, rows: np.ndarray, key: str) -> pd.DataFrame:
    """Impressions of `key` candidates labelled by the clicks and purchases that follow them."""
    kind = ev["event_type"].to_numpy()
    shown = rows & (kind == "impression") & (ev[key].to_numpy() != "")
    base = ev.loc[shown, ["user_id", key, *_present(ev)]].copy()
    base["t"] = t[shown]
    base = base.sort_values("t", kind="stable").reset_index(drop=True)
    base["row"] = np.arange(len(base))
    for label, event, window in (
        ("clicked", "click", CLICK_WINDOW_S),
        ("purchased", "purchase", PURCHASE_WINDOW_S),
    ):
        sel = (kind == event) & (ev[key].to_numpy() != "")
        hits = ev.loc[sel, ["user_id", key]].assign(t=t[sel]).sort_values("t", kind="stable")
        matched = pd.merge_asof(
            hits,
            base[["user_id", key, "t", "row"]],
            on="t",
            by=["user_id", key],
            direction="backward",
            tolerance=window,
        )
        flag = np.zeros(len(base), dtype=np.int64)
        flag[matched["row"].dropna().astype(np.int64).to_numpy()] = 1
        base[label] = flag
    out = pd.DataFrame(
        {
            "user_id": base["user_id"].to_numpy(dtype=object),
            key: base[key].to_numpy(dtype=object),
            "event_timestamp": to_utc(base["t"].to_numpy()),
            "request_ts": base["t"].to_numpy(dtype=np.int64),
            "clicked": base["clicked"],
            "purchased": base["purchased"],
        }
    )
    for col in _present(ev):
        out[col] = base[col].to_numpy(dtype=np.float64)
    return out


def _present(ev: pd.DataFrame) -> list[str]:
    return [c for c in ORACLE_COLUMNS if c in ev.columns]


__all__ = [
    "AFFINITY_SLOTS",
    "DAY",
    "HOUR",
    "Activities",
    "Catalogue",
    "EventArrays",
    "Progress",
    "Windows",
    "activity_stats",
    "forever_window",
    "item_stats",
    "labels",
    "to_seconds",
    "to_utc",
    "user_tables",
]
