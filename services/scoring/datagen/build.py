"""Offline feature tables from an event log: daily snapshots, vectorized, point-in-time safe.

Every aggregate at snapshot time T counts only events strictly before T, over windows
[T - w, T). Snapshots are taken at each UTC midnight and at the log's end (`as_of`), so a
training row at time t joins the last snapshot at or before t and never sees a later event.
Campaign statistics are refreshed hourly (on the hour, and at `as_of`): a flash sale lasts a
day or two, so a daily job would know nothing of its response until it is half over.
Windows are computed for all (entity, snapshot) pairs at once: events are sorted by
(entity, time) into one int64 key, and two `searchsorted` calls plus a cumulative sum give
every window count or sum (no per-entity Python loop).

Tables (data/<name>.parquet, the sources of features/*.py):
user_profile, user_behavior, user_affinity, item_stats, item_embedding, activity_stats,
bundle_stats (scoring.datagen.bundles), and the collaborative ones (user_recent,
item_cooccurrence, user_mf, item_mf: scoring.datagen.collaborative), the basket ones
(item_copurchase, category_complements: scoring.datagen.baskets);
training labels impressions_item, impressions_activity, impressions_bundle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.datagen.baskets import TABLES as BASKET_TABLES
from scoring.datagen.baskets import Baskets, basket_tables
from scoring.datagen.bundles import bundle_stats
from scoring.datagen.collaborative import TABLES as COLLABORATIVE_TABLES
from scoring.datagen.collaborative import Interactions, collaborative_tables
from scoring.datagen.embedding import EMBEDDING_DIM, TextEmbedder, project_texts
from scoring.datagen.events import ACTIVITY_TYPES, ORACLE_COLUMNS, EventLog

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
TABLES = (
    "user_profile",
    "user_behavior",
    "user_affinity",
    "item_stats",
    "item_embedding",
    "activity_stats",
    "bundle_stats",
    *COLLABORATIVE_TABLES,
    *BASKET_TABLES,
    "impressions_item",
    "impressions_activity",
    "impressions_bundle",
)

Progress = Callable[[str], None]
# The steps `build_tables` reports, in order (then scoring.datagen.dataset writes the files).
BUILD_STEPS = (
    "items: catalogue",
    "items: text embeddings",
    "items: daily statistics",
    "users: profiles",
    "users: behaviour windows",
    "users: category affinity and recency",
    "collaborative: recent items, co-occurrence, embeddings",
    "baskets: co-purchase, complementary categories",
    "activities",
    "bundles",
    "labels",
    "writing Parquet",
)


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """Where the build keeps its state between runs (category codes, PCA basis, text cache)."""

    data_dir: Path
    text_cache: Path | None = None

    @property
    def vocab_path(self) -> Path:
        return self.data_dir / "vocab.json"

    @property
    def projection_path(self) -> Path:
        return self.data_dir / "text_projection.npz"


class Vocab:
    """Append-only string -> int codes, persisted, so codes stay stable across rebuilds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.codes: dict[str, list[str]] = json.loads(path.read_text()) if path.exists() else {}

    def encode(self, name: str, values: pd.Series) -> np.ndarray:
        """Codes of `values` (-1 for missing); numbers stay numbers."""
        if pd.api.types.is_numeric_dtype(values):
            return np.asarray(values.fillna(-1).to_numpy(dtype=np.int64))
        known = self.codes.setdefault(name, [])
        strings = values.astype("string")
        for value in sorted(set(strings.dropna()) - set(known)):
            known.append(value)
        index = {v: i for i, v in enumerate(known)}
        return np.asarray(strings.map(index).fillna(-1).to_numpy(dtype=np.int64))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.codes, indent=1, sort_keys=True))


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


def snapshot_times(t: np.ndarray, every: int = DAY) -> np.ndarray:
    """UTC midnights (or full hours, `every=HOUR`) from the first event's day up to the end,
    plus the end (last event + 1s).

    The first snapshot has no history yet (all windows 0): the log's world starts there.
    """
    as_of = int(t.max()) + 1
    first = (int(t.min()) // DAY) * DAY
    days = np.arange(first, as_of, every, dtype=np.int64)
    return np.unique(np.append(days, as_of))


def _utc(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True))


def _seconds(values: pd.Series) -> np.ndarray:
    return np.asarray(pd.to_datetime(values, utc=True).astype("int64") // 1_000_000_000)


def _first_snapshot_at_or_after(snaps: np.ndarray, t: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(snaps, t, side="left")
    return np.where(idx < len(snaps), snaps[np.minimum(idx, len(snaps) - 1)], -1)


def _pairs(n: int, snaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (entity index, snapshot time) pair."""
    return np.repeat(np.arange(n), len(snaps)), np.tile(snaps, n)


def build_tables(
    log: EventLog, options: BuildOptions, progress: Progress | None = None
) -> dict[str, pd.DataFrame]:
    """Computes every offline feature table and the labelled impressions from `log`."""
    step = progress or (lambda _: None)
    vocab = Vocab(options.vocab_path)
    ev = log.events
    t = _seconds(ev["timestamp"])
    snaps = snapshot_times(t)
    kind = ev["event_type"].to_numpy()
    has_item = ev["item_id"].to_numpy() != ""
    qty = ev["quantity"].fillna(1).to_numpy(dtype=np.float64)
    spend = np.where(kind == "purchase", ev["price"].fillna(0).to_numpy() * qty, 0.0)

    user_ids = pd.Index(pd.unique(pd.concat([log.users["user_id"], ev["user_id"]])))
    item_ids = pd.Index(pd.unique(pd.concat([log.items["item_id"], ev.loc[has_item, "item_id"]])))
    u = user_ids.get_indexer(ev["user_id"])
    i = np.where(has_item, item_ids.get_indexer(ev["item_id"].where(has_item, "")), -1)

    step("items: catalogue")
    items = log.items.set_index("item_id").reindex(item_ids)
    first_seen = pd.Series(t[has_item]).groupby(i[has_item]).min().reindex(range(len(item_ids)))
    created = (
        _seconds(items["created_at"]).astype(np.float64)
        if "created_at" in items and items["created_at"].notna().any()
        else np.full(len(item_ids), np.nan)
    )
    created = np.where(np.isnan(created), first_seen.to_numpy(dtype=np.float64), created)
    created = np.nan_to_num(created, nan=float(snaps[0])).astype(np.int64)
    category = vocab.encode("category", items.get("category", pd.Series(index=items.index)))
    brand = vocab.encode("brand", items.get("brand", pd.Series(index=items.index)))
    purchase_price = (
        pd.Series(ev["price"].to_numpy()[has_item & (kind == "purchase")])
        .groupby(i[has_item & (kind == "purchase")])
        .median()
        .reindex(range(len(item_ids)))
        .to_numpy()
    )
    list_price = items["price"].to_numpy(dtype=np.float64) if "price" in items else None
    price = (
        purchase_price
        if list_price is None
        else np.where(np.isnan(list_price), purchase_price, list_price)
    )
    tables: dict[str, pd.DataFrame] = {}

    step("items: text embeddings")
    title = items["title"].fillna("") if "title" in items else pd.Series("", index=items.index)
    desc = (
        items["description"].fillna("")
        if "description" in items
        else pd.Series("", index=items.index)
    )
    text = (title.astype(str) + ". " + desc.astype(str)).str.strip(". ")
    has_text = (text != "").to_numpy()
    if has_text.any():
        coords = project_texts(
            text[has_text].tolist(), TextEmbedder(options.text_cache), options.projection_path
        )
        tables["item_embedding"] = pd.DataFrame(
            {
                "item_id": item_ids.to_numpy(dtype=object)[has_text],
                "embedding": list(coords),
                "event_timestamp": _utc(created[has_text]),
            }
        )
    else:
        tables["item_embedding"] = pd.DataFrame(
            {
                "item_id": pd.Series(dtype=object),
                "embedding": pd.Series(dtype=object),
                "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            }
        )

    step("items: daily statistics")
    ie, it = _pairs(len(item_ids), snaps)
    live = it > created[ie]
    # One row at creation (catalogue attributes, aggregates 0), then one per snapshot.
    ie = np.concatenate([np.arange(len(item_ids)), ie[live]])
    it = np.concatenate([created, it[live]])
    on_item = has_item
    imp = Windows(i[on_item & (kind == "impression")], t[on_item & (kind == "impression")])
    clk = Windows(i[on_item & (kind == "click")], t[on_item & (kind == "click")])
    vw = Windows(i[on_item & (kind == "view")], t[on_item & (kind == "view")])
    cart = Windows(i[on_item & (kind == "add_to_cart")], t[on_item & (kind == "add_to_cart")])
    pm = on_item & (kind == "purchase")
    buy = Windows(i[pm], t[pm])
    sold = Windows(i[pm], t[pm], qty[pm])
    forever = int(t.max()) + 1 - int(t.min()) + DAY
    imps7, clicks7 = imp.total(ie, it, 7 * DAY), clk.total(ie, it, 7 * DAY)
    imps30, clicks30 = imp.total(ie, it, 30 * DAY), clk.total(ie, it, 30 * DAY)
    rating = items["rating"].to_numpy(dtype=np.float64) if "rating" in items else None
    stock = items["in_stock"].fillna(1).to_numpy(dtype=np.int64) if "in_stock" in items else None
    tables["item_stats"] = pd.DataFrame(
        {
            "item_id": item_ids.to_numpy(dtype=object)[ie],
            "category": category[ie],
            "brand": brand[ie],
            "price": price[ie].astype(np.float32),
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
            "event_timestamp": _utc(it),
        }
    )

    step("users: profiles")
    users = log.users.set_index("user_id").reindex(user_ids)
    first_event = pd.Series(t).groupby(u).min().reindex(range(len(user_ids))).to_numpy()
    signup = (
        _seconds(users["signup_at"]).astype(np.float64)
        if "signup_at" in users and users["signup_at"].notna().any()
        else np.full(len(user_ids), np.nan)
    )
    signup = np.where(np.isnan(signup), first_event, signup)
    signup = np.nan_to_num(signup, nan=float(snaps[0])).astype(np.int64)
    # The CRM export is daily: a profile appears at the first midnight after sign-up.
    exported = _first_snapshot_at_or_after(snaps, signup + 1)
    ok = exported >= 0

    def code(name: str) -> np.ndarray:
        col = users[name] if name in users else pd.Series(np.nan, index=users.index)
        return vocab.encode(name, col)[ok]

    tables["user_profile"] = pd.DataFrame(
        {
            "user_id": user_ids.to_numpy(dtype=object)[ok],
            "segment": code("segment"),
            "region": code("region"),
            "membership_level": code("membership_level"),
            "age_bucket": code("age_bucket"),
            "signup_ts": signup[ok].astype(np.float64),
            "event_timestamp": _utc(exported[ok]),
        }
    )

    step("users: behaviour windows")
    ue, ut = _active_user_snapshots(u, t, len(user_ids), snaps)
    tables["user_behavior"] = _user_behaviour(user_ids, u, t, kind, spend, ue, ut)

    step("users: category affinity and recency")
    tables["user_affinity"] = _user_affinity(user_ids, u, t, i, kind, has_item, category, ue, ut)
    del ue, ut

    step("collaborative: recent items, co-occurrence, embeddings")
    interactions = Interactions.of(ev, t, u, i, len(user_ids), len(item_ids))
    ids = user_ids.to_numpy(dtype=object), item_ids.to_numpy(dtype=object)
    tables.update(collaborative_tables(interactions, *ids, created, snaps))

    step("baskets: co-purchase, complementary categories")
    baskets = Baskets.of(ev, t, u, i, len(item_ids))
    tables.update(basket_tables(baskets, ids[1], category, created, snaps))

    step("activities")
    _activity_tables(log, vocab, t, u, kind, has_item, snapshot_times(t, HOUR), tables)

    step("bundles")
    # The item statistics and baskets above, read as of each bundle row; hourly rows, like
    # the activities': a bundle's response counts are what its first days are ranked by.
    tables["bundle_stats"] = bundle_stats(
        log.bundles,
        ev,
        t,
        has_item,
        snapshot_times(t, HOUR),
        tables["item_stats"],
        baskets,
        item_ids,
    )

    step("labels")
    tables["impressions_item"] = _labels(ev, t, has_item, "item_id")
    tables["impressions_activity"] = _labels(ev, t, ~has_item, "activity_id")
    # Bundle impressions; a log without the column: none (the same columns, no rows).
    on_bundle = ev if "bundle_id" in ev else ev.iloc[:0].assign(bundle_id="")
    n = len(on_bundle)
    tables["impressions_bundle"] = _labels(on_bundle, t[:n], ~has_item[:n], "bundle_id")
    vocab.save()
    return tables


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
    behaviour["event_timestamp"] = _utc(ut)
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
            "event_timestamp": _utc(ut),
        },
        copy=False,  # the columns are rows of the blocks above: no second copy of them
    )


def _activity_tables(
    log: EventLog,
    vocab: Vocab,
    t: np.ndarray,
    u: np.ndarray,
    kind: np.ndarray,
    has_item: np.ndarray,
    snaps: np.ndarray,
    tables: dict[str, pd.DataFrame],
) -> None:
    acts = log.activities.drop_duplicates("activity_id", keep="last").reset_index(drop=True)
    ids = pd.Index(acts["activity_id"])
    start = _seconds(acts["start_at"]) if len(acts) else np.zeros(0, dtype=np.int64)
    end = _seconds(acts["end_at"]) if len(acts) else np.zeros(0, dtype=np.int64)
    targets = (
        acts["target_categories"].fillna("").astype(str).str.split("|")
        if "target_categories" in acts
        else pd.Series([[]] * len(acts), dtype=object)
    )
    first = vocab.encode("category", targets.str[0].replace("", None))
    second = vocab.encode("category", targets.str[1].replace("", None))
    type_code = pd.Categorical(acts["activity_type"], categories=ACTIVITY_TYPES).codes
    discount = (
        acts["discount_pct"].to_numpy(dtype=np.float32)
        if "discount_pct" in acts
        else np.zeros(len(acts), dtype=np.float32)
    )
    # Campaigns are announced a day before they start.
    announced = start - DAY
    a = ids.get_indexer(log.events["activity_id"])
    on_act = (a >= 0) & ~has_item
    ae, at = _pairs(len(ids), snaps)
    # After the announcement: hourly until a day after the end, then daily (only the windows
    # still change).
    recent = (at <= end[ae] + DAY) | (at % DAY == 0) | (at == snaps[-1])
    live = (at > announced[ae]) & recent if len(ids) else np.zeros(0, dtype=bool)
    # One row when announced, then one per snapshot.
    ae = np.concatenate([np.arange(len(ids)), ae[live]])
    at = np.concatenate([announced, at[live]]).astype(np.int64)
    imp = Windows(a[on_act & (kind == "impression")], t[on_act & (kind == "impression")])
    joined = (a >= 0) & ((on_act & (kind == "click")) | (kind == "purchase"))
    part = Windows(a[joined], t[joined])
    imps7 = imp.total(ae, at, 7 * DAY)
    part7 = part.total(ae, at, 7 * DAY)
    # Every earlier event: a campaign's appeal does not fade, and most run for days only.
    forever = int(t.max()) + 1 - int(t.min()) + DAY
    imps_all, part_all = imp.total(ae, at, forever), part.total(ae, at, forever)
    tables["activity_stats"] = pd.DataFrame(
        {
            "activity_id": ids.to_numpy(dtype=object)[ae],
            "activity_type": type_code.astype(np.int64)[ae],
            "discount_pct": discount[ae],
            "target_category": first[ae],
            "target_category_2": second[ae],
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
            "event_timestamp": _utc(at),
        }
    )


def _labels(ev: pd.DataFrame, t: np.ndarray, rows: np.ndarray, key: str) -> pd.DataFrame:
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
            "event_timestamp": _utc(base["t"].to_numpy()),
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


def write_tables(tables: dict[str, pd.DataFrame], data_dir: Path) -> list[Path]:
    """Writes each table as data_dir/<name>.parquet atomically (temp file, then rename)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tables.items():
        path = data_dir / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(path)
        paths.append(path)
    return paths


__all__ = [
    "AFFINITY_SLOTS",
    "BUILD_STEPS",
    "EMBEDDING_DIM",
    "TABLES",
    "BuildOptions",
    "build_tables",
    "snapshot_times",
    "write_tables",
]
