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
from scoring.datagen.entity_tables import (
    AFFINITY_SLOTS,
    DAY,
    HOUR,
    Activities,
    Catalogue,
    EventArrays,
    Progress,
    Windows,
    activity_stats,
    forever_window,
    item_stats,
    labels,
    user_tables,
)
from scoring.datagen.entity_tables import to_seconds as _seconds
from scoring.datagen.entity_tables import to_utc as _utc
from scoring.datagen.events import ACTIVITY_TYPES, EventLog

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


def snapshot_times(t: np.ndarray, every: int = DAY) -> np.ndarray:
    """UTC midnights (or full hours, `every=HOUR`) from the first event's day up to the end,
    plus the end (last event + 1s).

    The first snapshot has no history yet (all windows 0): the log's world starts there.
    """
    as_of = int(t.max()) + 1
    first = (int(t.min()) // DAY) * DAY
    days = np.arange(first, as_of, every, dtype=np.int64)
    return np.unique(np.append(days, as_of))


def _first_snapshot_at_or_after(snaps: np.ndarray, t: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(snaps, t, side="left")
    return np.where(idx < len(snaps), snaps[np.minimum(idx, len(snaps) - 1)], -1)


def _entity_times(
    table: pd.DataFrame, column: str, first_event: np.ndarray, snaps: np.ndarray
) -> np.ndarray:
    """Per row of `table`, the time (int64 seconds) of `column` (a creation or sign-up time);
    where it has none, the entity's first event (`first_event`, NaN when none); else the first
    snapshot."""
    given = (
        _seconds(table[column]).astype(np.float64)
        if column in table and table[column].notna().any()
        else np.full(len(table), np.nan)
    )
    given = np.where(np.isnan(given), first_event, given)
    return np.nan_to_num(given, nan=float(snaps[0])).astype(np.int64)


def item_catalogue(
    items_table: pd.DataFrame,
    item_ids: pd.Index,
    first_seen: np.ndarray,
    purchase_price: np.ndarray,
    snaps: np.ndarray,
    vocab: Vocab,
) -> Catalogue:
    """The catalogue of `item_ids` (global context of the per-item steps).

    Args:
        items_table: the log's items table.
        first_seen: per item, the time (float seconds) of its first event; NaN when none.
        purchase_price: per item, the median purchase price; NaN when never bought.
    """
    items = items_table.set_index("item_id").reindex(item_ids)
    created = _entity_times(items, "created_at", first_seen, snaps)
    category = vocab.encode("category", items.get("category", pd.Series(index=items.index)))
    brand = vocab.encode("brand", items.get("brand", pd.Series(index=items.index)))
    list_price = items["price"].to_numpy(dtype=np.float64) if "price" in items else None
    price = (
        purchase_price
        if list_price is None
        else np.where(np.isnan(list_price), purchase_price, list_price)
    )
    rating = items["rating"].to_numpy(dtype=np.float64) if "rating" in items else None
    stock = items["in_stock"].fillna(1).to_numpy(dtype=np.int64) if "in_stock" in items else None
    return Catalogue(item_ids, created, category, brand, price, rating, stock)


def build_tables(
    log: EventLog, options: BuildOptions, progress: Progress | None = None
) -> dict[str, pd.DataFrame]:
    """Computes every offline feature table and the labelled impressions from `log`."""
    step = progress or (lambda _: None)
    vocab = Vocab(options.vocab_path)
    ev = log.events
    arrays, snaps, user_ids, item_ids, u, i = index_log(log)
    t, has_item = arrays.t, arrays.has_item

    step("items: catalogue")
    cat = log_catalogue(log, arrays, item_ids, i, snaps, vocab)
    tables: dict[str, pd.DataFrame] = {}

    step("items: text embeddings")
    tables["item_embedding"] = item_embedding(log.items, cat, options)

    step("items: daily statistics")
    forever = forever_window(t)
    tables["item_stats"] = item_stats(cat, np.arange(len(item_ids)), i, arrays, snaps, forever)

    step("users: profiles")
    tables["user_profile"] = user_profile(log.users, user_ids, u, t, snaps, vocab)

    step("users: behaviour windows")
    behaviour, affinity = user_tables(user_ids, u, i, arrays, cat.category, snaps, step)
    tables["user_behavior"], tables["user_affinity"] = behaviour, affinity
    del behaviour, affinity

    baskets = cross_entity_tables(log, arrays, u, i, cat, user_ids, snaps, tables, step)

    step("activities")
    acts = activity_catalogue(log.activities, vocab)
    tables["activity_stats"] = activity_stats(
        acts,
        np.arange(len(acts.ids)),
        acts.ids.get_indexer(ev["activity_id"]),
        arrays,
        snapshot_times(t, HOUR),
        forever,
    )

    step("bundles")
    tables["bundle_stats"] = bundles_table(log, arrays, baskets, tables["item_stats"], cat)

    step("labels")
    tables["impressions_item"] = labels(ev, t, has_item, "item_id")
    tables["impressions_activity"] = labels(ev, t, ~has_item, "activity_id")
    # Bundle impressions; a log without the column: none (the same columns, no rows).
    on_bundle = ev if "bundle_id" in ev else ev.iloc[:0].assign(bundle_id="")
    n = len(on_bundle)
    tables["impressions_bundle"] = labels(on_bundle, t[:n], ~has_item[:n], "bundle_id")
    vocab.save()
    return tables


def index_log(
    log: EventLog,
) -> tuple[EventArrays, np.ndarray, pd.Index, pd.Index, np.ndarray, np.ndarray]:
    """Where a build starts (either engine): the events as arrays, the daily snapshot times
    and the entities (`entity_indices`: user_ids, item_ids, u, i)."""
    arrays = EventArrays.of(log.events)
    user_ids, item_ids, u, i = entity_indices(log, arrays.has_item)
    return arrays, snapshot_times(arrays.t), user_ids, item_ids, u, i


def log_catalogue(
    log: EventLog,
    arrays: EventArrays,
    item_ids: pd.Index,
    i: np.ndarray,
    snaps: np.ndarray,
    vocab: Vocab,
) -> Catalogue:
    """`item_catalogue` of the log's items, with their first events and purchase prices."""
    seen_and_price = item_first_seen_and_price(log.events, arrays, i, len(item_ids))
    return item_catalogue(log.items, item_ids, *seen_and_price, snaps, vocab)


def entity_indices(
    log: EventLog, has_item: np.ndarray
) -> tuple[pd.Index, pd.Index, np.ndarray, np.ndarray]:
    """user_ids, item_ids (catalogue first, then the events' others in order of appearance)
    and each event's user and item index (-1: no item)."""
    ev = log.events
    user_ids = pd.Index(pd.unique(pd.concat([log.users["user_id"], ev["user_id"]])))
    item_ids = pd.Index(pd.unique(pd.concat([log.items["item_id"], ev.loc[has_item, "item_id"]])))
    u = user_ids.get_indexer(ev["user_id"])
    i = np.where(has_item, item_ids.get_indexer(ev["item_id"].where(has_item, "")), -1)
    return user_ids, item_ids, u, i


def item_first_seen_and_price(
    ev: pd.DataFrame, arrays: EventArrays, i: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per item index (of n): its first event's time and its median purchase price (NaN:
    none)."""
    t, kind, has_item = arrays.t, arrays.kind, arrays.has_item
    first_seen = pd.Series(t[has_item]).groupby(i[has_item]).min().reindex(range(n))
    bought = has_item & (kind == "purchase")
    purchase_price = (
        pd.Series(ev["price"].to_numpy()[bought]).groupby(i[bought]).median().reindex(range(n))
    )
    return first_seen.to_numpy(dtype=np.float64), purchase_price.to_numpy()


def item_embedding(
    items_table: pd.DataFrame, cat: Catalogue, options: BuildOptions
) -> pd.DataFrame:
    """item_embedding: each item's title and description, embedded and projected (PCA)."""
    items = items_table.set_index("item_id").reindex(cat.item_ids)
    title = items["title"].fillna("") if "title" in items else pd.Series("", index=items.index)
    desc = (
        items["description"].fillna("")
        if "description" in items
        else pd.Series("", index=items.index)
    )
    text = (title.astype(str) + ". " + desc.astype(str)).str.strip(". ")
    has_text = (text != "").to_numpy()
    if not has_text.any():
        return pd.DataFrame(
            {
                "item_id": pd.Series(dtype=object),
                "embedding": pd.Series(dtype=object),
                "event_timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            }
        )
    coords = project_texts(
        text[has_text].tolist(), TextEmbedder(options.text_cache), options.projection_path
    )
    return pd.DataFrame(
        {
            "item_id": cat.item_ids.to_numpy(dtype=object)[has_text],
            "embedding": list(coords),
            "event_timestamp": _utc(cat.created[has_text]),
        }
    )


def user_profile(
    users_table: pd.DataFrame,
    user_ids: pd.Index,
    u: np.ndarray,
    t: np.ndarray,
    snaps: np.ndarray,
    vocab: Vocab,
) -> pd.DataFrame:
    """user_profile: the CRM attributes, one row per user from the first export after sign-up."""
    users = users_table.set_index("user_id").reindex(user_ids)
    first_event = pd.Series(t).groupby(u).min().reindex(range(len(user_ids))).to_numpy()
    signup = _entity_times(users, "signup_at", first_event, snaps)
    # The CRM export is daily: a profile appears at the first midnight after sign-up.
    exported = _first_snapshot_at_or_after(snaps, signup + 1)
    ok = exported >= 0

    def code(name: str) -> np.ndarray:
        col = users[name] if name in users else pd.Series(np.nan, index=users.index)
        return vocab.encode(name, col)[ok]

    return pd.DataFrame(
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


def cross_entity_tables(
    log: EventLog,
    ev: EventArrays,
    u: np.ndarray,
    i: np.ndarray,
    cat: Catalogue,
    user_ids: pd.Index,
    snaps: np.ndarray,
    tables: dict[str, pd.DataFrame],
    progress: Progress,
) -> Baskets:
    """The collaborative and basket tables (they read many entities' events at once); returns
    the baskets (bundle_stats reads them)."""
    progress("collaborative: recent items, co-occurrence, embeddings")
    n_items = len(cat.item_ids)
    interactions = Interactions.of(log.events, ev.t, u, i, len(user_ids), n_items)
    ids = user_ids.to_numpy(dtype=object), cat.item_ids.to_numpy(dtype=object)
    tables.update(collaborative_tables(interactions, *ids, cat.created, snaps))
    del interactions

    progress("baskets: co-purchase, complementary categories")
    baskets = Baskets.of(log.events, ev.t, u, i, n_items)
    tables.update(basket_tables(baskets, ids[1], cat.category, cat.created, snaps))
    return baskets


def bundles_table(
    log: EventLog, ev: EventArrays, baskets: Baskets, stats: pd.DataFrame, cat: Catalogue
) -> pd.DataFrame:
    """bundle_stats: the item statistics (`stats`) and baskets read as of each bundle row."""
    # Hourly rows, like the activities': a bundle's response counts are what its first days
    # are ranked by.
    return bundle_stats(
        log.bundles,
        log.events,
        ev.t,
        ev.has_item,
        snapshot_times(ev.t, HOUR),
        stats,
        baskets,
        cat.item_ids,
    )


def activity_catalogue(activities: pd.DataFrame, vocab: Vocab) -> Activities:
    """The campaigns table as arrays (the newest row per activity_id)."""
    acts = activities.drop_duplicates("activity_id", keep="last").reset_index(drop=True)
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
    return Activities(ids, type_code.astype(np.int64), discount, first, second, start, end)


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
    "DAY",
    "EMBEDDING_DIM",
    "HOUR",
    "TABLES",
    "Activities",
    "BuildOptions",
    "Catalogue",
    "EventArrays",
    "Progress",
    "Windows",
    "activity_stats",
    "build_tables",
    "forever_window",
    "item_stats",
    "labels",
    "snapshot_times",
    "user_tables",
    "write_tables",
]
