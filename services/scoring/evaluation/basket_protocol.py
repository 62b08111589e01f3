"""The basket protocol: complete-the-basket tasks from a log's orders, with their carts.

Baskets: a log's purchases grouped by `order_id` (a purchase without one belongs to its user's
purchases of that UTC day), each with its distinct items in log order (an item's first
purchase in it) and its time (its first purchase). A basket of 2 or more distinct items is a
task: one item held out, the others the cart.

`scoring evaluate --protocol basket` splits by time, like the `time` protocol but over baskets:
the cut is the time before which `1 - test_fraction` of the baskets of 2 or more items fall, and
each user's first such basket at or after the cut (by time, ties by log order) is their test
basket. `train` is every interaction before the cut (`scoring train --holdout basket` leaves out
the same). One item of each test basket, drawn with a generator seeded by `seed`, is the
held-out item, and the cart is the others: the first `CART_SLOTS` of them in log order fill the
cart fields, `cart_size` counts all of them. (Holding out each user's last basket instead, as
leave-one-out does, took most of the synthetic log's baskets out of training: most of its
users have one basket of 2 or more items.) The candidates
are the held-out item and K negatives drawn uniformly from the training catalogue, none of them
an item of the basket. Unlike leave-one-out, an item the user interacted with at another time
may be a negative: the question is which item completes this cart, and the only right answers
are the basket's items (excluding the user's every item would also hand any "has the user
touched it" scorer the answer: on the synthetic log, where a purchase follows views of the
item, `most bought (user)` beat the generator's own basket oracle that way). At most
`max_users` test baskets, a seeded sample in user order.

The cart fields are what the gateway sends with a cart (core.targets): each cart item's code
(core.codes.item_codes; -1 an empty slot), its category code (the build's vocab codes, read
from the `item_stats` table; -1 unknown) and the cart's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from scoring.core.codes import item_codes
from scoring.core.targets import CART_CATEGORY_FIELDS, CART_ITEM_FIELDS, CART_SIZE_FIELD, CART_SLOTS
from scoring.evaluation.interactions import sorted_categorical
from scoring.evaluation.protocol import (
    EvalProtocol,
    EvalTasks,
    _reasons,
    _sample_negatives,
    seeded_sample,
    timestamps_ns,
    training_catalogue,
)

DAY_NS = 86_400 * 10**9
ITEM_STATS = "item_stats.parquet"
ITEM_ORACLE = "item_oracle.parquet"
EMPTY = -1.0
ORACLE = "oracle"
# (cart item ids [n, k] object, "" empty; candidate ids [n]) -> the planted log-odds [n].
BasketOracle = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class Baskets:
    """A log's baskets of purchases, in time order (ties: log order of their first purchase).

    Attributes:
        user: each basket's user code.
        time: its first purchase's time (UTC ns).
        offsets: basket b's items are items[offsets[b]:offsets[b + 1]].
        items: the baskets' distinct item codes, each basket's in log order.
    """

    user: np.ndarray
    time: np.ndarray
    offsets: np.ndarray
    items: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.user)


def basket_keys(interactions: pd.DataFrame, users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Each row's basket key: its order (`order_id`), else its user's UTC day."""
    day = times // DAY_NS
    day = day - (day.min() if len(day) else 0)
    by_day = users.astype(np.int64) * (int(day.max()) + 1 if len(day) else 1) + day
    if "order_id" not in interactions.columns:
        return np.asarray(by_day, dtype=np.int64)
    orders = sorted_categorical(interactions["order_id"])
    codes = orders.cat.codes.to_numpy().astype(np.int64)
    empty = np.flatnonzero(orders.cat.categories == "")
    none = (codes < 0) | np.isin(codes, empty)
    return np.asarray(np.where(none, len(orders.cat.categories) + by_day, codes), dtype=np.int64)


def find_baskets(
    interactions: pd.DataFrame, users: np.ndarray, items: np.ndarray, times: np.ndarray
) -> Baskets:
    """The baskets of the log's purchases (module docstring).

    Args:
        interactions: as load_interactions returns them (log order); event_type and, when
            the log has one, order_id are read.
        users, items, times: the rows' user and item codes and UTC ns times.
    """
    rows = np.flatnonzero(interactions["event_type"].astype(str).to_numpy() == "purchase")
    keys = basket_keys(interactions, users, times)[rows]
    _, basket = np.unique(keys, return_inverse=True)
    basket = basket.reshape(-1).astype(np.int64)
    n_items = int(items.max()) + 1 if len(items) else 1
    pair = basket * n_items + items[rows]
    first = np.sort(np.unique(pair, return_index=True)[1])  # log order
    # Baskets in time order: by the log position of their first purchase.
    n = int(basket.max()) + 1 if len(basket) else 0
    start = np.full(n, len(rows), dtype=np.int64)
    np.minimum.at(start, basket, np.arange(len(rows)))
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(start, kind="stable")] = np.arange(n)
    b = rank[basket[first]]
    order = np.argsort(b, kind="stable")
    counts = np.bincount(b, minlength=n)
    first_rows = rows[np.sort(start)] if n else np.zeros(0, dtype=np.int64)
    return Baskets(
        user=users[first_rows],
        time=times[first_rows],
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        items=items[rows][first][order],
    )


def split_baskets(baskets: Baskets, test_fraction: float) -> tuple[int, np.ndarray]:
    """The time split's cut (UTC ns) and each user's first basket of 2 or more distinct items
    at or after it (indices, in user order).

    Raises:
        ValueError: the log has no basket of 2 or more distinct items.
    """
    ok = np.flatnonzero(baskets.sizes >= 2)
    if not len(ok):
        raise ValueError(_NO_BASKET)
    times = baskets.time[ok]  # baskets are in time order
    cut = int(times[min(int(len(ok) * (1.0 - test_fraction)), len(ok) - 1)])
    after = ok[times >= cut]
    first = np.unique(baskets.user[after], return_index=True)[1]
    return cut, after[first]


def hold_out(
    baskets: Baskets, chosen: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One item of each chosen basket, drawn uniformly, and the rest as the cart.

    Returns:
        (held-out item codes [n], cart item codes [n, CART_SLOTS] with -1 in empty slots,
        cart sizes [n]: every other item of the basket, beyond the slots too).
    """
    lo, size = baskets.offsets[chosen], baskets.sizes[chosen]
    pick = np.minimum(np.floor(rng.random(len(chosen)) * size).astype(np.int64), size - 1)
    held = baskets.items[lo + pick]
    slot = np.arange(CART_SLOTS)
    # Cart slot s holds the basket's item s, or s + 1 from the held-out item on.
    at = slot[None, :] + (slot[None, :] >= pick[:, None])
    filled = at < size[:, None]
    index = np.where(filled, lo[:, None] + at, 0)
    cart = np.where(filled, baskets.items[np.minimum(index, len(baskets.items) - 1)], -1)
    return held, cart.astype(np.int64), size - 1


def item_categories(data_dir: Path) -> pd.Series:
    """Item id -> the build's category code (data/vocab.json, via the newest `item_stats`
    row); empty when the table is missing."""
    path = data_dir / ITEM_STATS
    if not path.exists() or "category" not in pq.read_schema(path).names:
        return pd.Series(dtype=np.float64)
    table = pd.read_parquet(path, columns=["item_id", "category", "event_timestamp"])
    table = table.sort_values("event_timestamp", kind="stable").drop_duplicates(
        "item_id", keep="last"
    )
    return pd.Series(
        table["category"].fillna(-1).to_numpy(dtype=np.float64),
        index=pd.Index(table["item_id"].astype(str)),
    )


def cart_fields(
    cart_ids: np.ndarray, sizes: np.ndarray, categories: pd.Series
) -> dict[str, np.ndarray]:
    """The cart request fields of carts given as ids ([n, CART_SLOTS], "" = empty slot)."""
    cart_ids = np.asarray(cart_ids, dtype=object)
    empty = cart_ids == ""
    flat = cart_ids.ravel()
    codes = np.where(empty.ravel(), EMPTY, item_codes(flat.astype(str)))
    if len(categories):
        known = categories.reindex(flat.astype(str)).to_numpy(dtype=np.float64)
        cats = np.where(empty.ravel() | np.isnan(known), EMPTY, known)
    else:
        cats = np.full(len(flat), EMPTY)
    codes, cats = codes.reshape(cart_ids.shape), cats.reshape(cart_ids.shape)
    out = {f: codes[:, k] for k, f in enumerate(CART_ITEM_FIELDS)}
    out |= {f: cats[:, k] for k, f in enumerate(CART_CATEGORY_FIELDS)}
    out[CART_SIZE_FIELD] = np.asarray(sizes, dtype=np.float64)
    return out


def cart_ids_of(frame: pd.DataFrame, ids: pd.Index) -> np.ndarray:
    """A scorer frame's cart items back as ids of `ids` ([rows, CART_SLOTS], "" unknown)."""
    codes = item_codes(ids.to_numpy(dtype=object).astype(str))
    lookup = pd.Index(codes)
    values = frame[list(CART_ITEM_FIELDS)].to_numpy(dtype=np.float64)
    at = lookup.get_indexer(values.ravel())
    names = np.append(ids.to_numpy(dtype=object).astype(str), "")
    return np.asarray(names[np.where(at >= 0, at, len(ids))].reshape(values.shape))


@dataclass(frozen=True)
class BasketTasks(EvalTasks):
    """EvalTasks whose rows also carry the test basket's cart (module docstring).

    Attributes:
        cart: [rows, CART_SLOTS] item codes (into `items`; -1 an empty slot).
        cart_size: the cart's distinct items (beyond the slots too).
        categories: item id -> category code (the cart fields' categories).
    """

    cart: np.ndarray = field(default_factory=lambda: np.zeros((0, CART_SLOTS), np.int64))
    cart_size: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    categories: pd.Series = field(default_factory=lambda: pd.Series(dtype=np.float64))

    def cart_ids(self, rows: np.ndarray) -> np.ndarray:
        """[len(rows), CART_SLOTS] cart item ids, "" in empty slots."""
        names = np.append(self.items.to_numpy(dtype=object).astype(str), "")
        cart = self.cart[rows]
        return np.asarray(names[np.where(cart >= 0, cart, len(self.items))])

    def frame(self, rows: np.ndarray, item_codes: np.ndarray) -> pd.DataFrame:
        out = EvalTasks.frame(self, rows, item_codes)
        fields = cart_fields(self.cart_ids(rows), self.cart_size[rows], self.categories)
        return pd.concat([out, pd.DataFrame(fields)], axis=1)

    def digest(self) -> str:
        """sha256 of the evaluated users, their carts and candidates."""
        h = hashlib.sha256()
        ids = self.items.to_numpy(dtype=object)
        users = self.heldout["user_id"].astype(str).to_numpy()
        for start in range(0, self.n_users, 10_000):
            rows = np.arange(start, min(start + 10_000, self.n_users))
            carts = self.cart_ids(rows)
            for user, cart, cand in zip(
                users[rows], carts, ids[self.candidate_codes[rows]], strict=True
            ):
                line = "\t".join([user, ",".join(c for c in cart if c), *cand])
                h.update((line + "\n").encode())
        return h.hexdigest()


def basket_holdout_ends(interactions: pd.DataFrame, test_fraction: float = 0.2) -> pd.Series:
    """Per user, the basket protocol's cut: what `--holdout basket` leaves out from (the
    defaults of `scoring evaluate --protocol basket`)."""
    users_c, users = _codes(interactions["user_id"])
    items_c, _ = _codes(interactions["item_id"])
    times = timestamps_ns(interactions["timestamp"])
    cut, _ = split_baskets(find_baskets(interactions, users_c, items_c, times), test_fraction)
    return pd.Series(pd.Timestamp(cut, tz="UTC"), index=pd.Index(users.astype(str)))


_NO_BASKET = (
    "no basket of 2 or more distinct purchased items (baskets: purchases grouped by order_id, "
    "else a user's purchases of one UTC day)"
)


def _basket_keys(baskets: Baskets, chosen: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted `row * n_items + item` keys of the items of each chosen basket (row: its index
    in `chosen`): what is never a negative of that task."""
    sizes = baskets.sizes[chosen]
    rows = np.repeat(np.arange(len(chosen)), sizes)
    starts = np.repeat(baskets.offsets[chosen], sizes)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.unique(rows * n_items + baskets.items[starts + within])


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    cat = sorted_categorical(values)
    return cat.cat.codes.to_numpy().astype(np.int64), cat.cat.categories


def build_basket_tasks(
    interactions: pd.DataFrame, protocol: EvalProtocol, categories: pd.Series | None = None
) -> BasketTasks:
    """Splits `interactions` (as load_interactions returns them) by the basket protocol.

    Args:
        protocol: kind "basket"; its negatives, seed and max_users.
        categories: item id -> category code for the cart fields (item_categories); none: -1.

    Raises:
        ValueError: no test basket, or too small a catalogue; the message says why.
    """
    if protocol.kind != "basket":
        raise ValueError(f"build_basket_tasks needs the basket protocol, not {protocol.kind!r}")
    users_c, users = _codes(interactions["user_id"])
    items_c, items = _codes(interactions["item_id"])
    times = timestamps_ns(interactions["timestamp"])
    if len(times) > 1 and bool((np.diff(times) < 0).any()):
        raise ValueError("interactions must be in time order (as load_interactions returns them)")
    baskets = find_baskets(interactions, users_c, items_c, times)
    try:
        cut, chosen = split_baskets(baskets, protocol.test_fraction)
    except ValueError as exc:
        raise ValueError(f"basket: {exc}") from None
    skipped: dict[str, int] = {
        "no basket of 2 or more distinct items at or after the cut": len(users) - len(chosen),
    }
    train_mask = times < cut
    if not train_mask.any():
        raise ValueError(
            f"basket: no interaction before the cut ({pd.Timestamp(cut, tz='UTC')}); the log "
            "needs baskets at more times"
        )
    catalogue = training_catalogue(items_c[train_mask], protocol)
    pick = seeded_sample(len(chosen), protocol, skipped)
    if pick is not None:
        chosen = chosen[pick]
    held_item, cart, size = hold_out(baskets, chosen, np.random.default_rng([protocol.seed, 2]))
    held_user, held_time = baskets.user[chosen], baskets.time[chosen]
    seen = _basket_keys(baskets, chosen, len(items))
    negatives, ok = _sample_negatives(
        np.random.default_rng([protocol.seed, 1]),
        catalogue,
        seen,
        held_item,
        len(items),
        protocol.negatives,
    )
    if not ok.all():
        skipped[f"fewer than {protocol.negatives} catalogue items outside the basket"] = int(
            (~ok).sum()
        )
        if not ok.any():
            raise ValueError(f"basket: no user can be evaluated ({_reasons(skipped)})")
        held_user, held_item, held_time = held_user[ok], held_item[ok], held_time[ok]
        cart, size, negatives, chosen = cart[ok], size[ok], negatives[ok], chosen[ok]
        seen = _basket_keys(baskets, chosen, len(items))
    heldout = pd.DataFrame(
        {
            "user_id": pd.Categorical.from_codes(held_user, categories=users),
            "item_id": pd.Categorical.from_codes(held_item, categories=items),
            "timestamp": pd.to_datetime(held_time, utc=True),
        }
    )
    candidates = np.concatenate([held_item[:, None], negatives], axis=1).astype(np.int32)
    return BasketTasks(
        protocol,
        interactions[train_mask].reset_index(drop=True),
        heldout,
        candidates,
        users,
        items,
        catalogue.astype(np.int32),
        seen,
        {k: v for k, v in skipped.items() if v},
        pd.Timestamp(cut, tz="UTC"),
        cart=cart,
        cart_size=size,
        categories=pd.Series(dtype=np.float64) if categories is None else categories,
    )


def basket_oracle(data_dir: Path) -> BasketOracle | None:
    """The synthetic generator's planted basket log-odds, when the build wrote the items'
    oracle columns (data/item_oracle.parquet; a synthetic log only); None otherwise."""
    path = data_dir / ITEM_ORACLE
    if not path.exists():
        return None
    from scoring.datagen.synthetic import basket_oracle_logit  # the generator's own oracle

    items = pd.read_parquet(path)

    def oracle(cart: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.asarray(
            basket_oracle_logit(items, np.asarray(cart, dtype=object), candidates),
            dtype=np.float64,
        )

    return oracle


def oracle_scorer(data_dir: Path, items: pd.Index) -> Callable[[pd.DataFrame], np.ndarray] | None:
    """A scorer from the planted basket log-odds (None without item_oracle.parquet); `items`:
    the ids the frames' cart codes come from."""
    oracle = basket_oracle(data_dir)
    if oracle is None:
        return None

    def score(frame: pd.DataFrame) -> np.ndarray:
        cart = cart_ids_of(frame, items)
        return oracle(cart, frame["item_id"].astype(str).to_numpy(dtype=object))

    return score


__all__ = [
    "ITEM_ORACLE",
    "ORACLE",
    "BasketOracle",
    "BasketTasks",
    "Baskets",
    "basket_holdout_ends",
    "basket_oracle",
    "build_basket_tasks",
    "cart_fields",
    "cart_ids_of",
    "find_baskets",
    "hold_out",
    "item_categories",
    "oracle_scorer",
    "split_baskets",
]
