"""A synthetic e-commerce event stream with a planted, known click and purchase probability.

Latent user traits (engagement, category preferences, typical spend), item traits (appeal,
price, category) and campaign traits drive an event stream: impressions of items and
campaigns, clicks, product views, add-to-carts and purchases, plus organic browsing. Every
impression carries its true probabilities (`p_click`, `p_purchase`: the oracle), a function of
(user, candidate, time). The stream goes through the same feature build as a user's imported
log (scoring.datagen.build), so a model learns the truth only through the features.

Baskets: every purchase is an order (`order_id`); after it, 0-3 more items join the order,
each drawn from the catalogue given the cart so far, with probability proportional to the exp
of the mean over the cart's items of the planted pair logit (complementary categories pull,
substitutes in the same category push away, the same brand pulls a little) plus a small pull
of the item's appeal, so that what completes a basket is not what sells most;
`basket_oracle_logit` gives its log-odds. Bundles: 2-4 mostly complementary items at a
discount, shown, clicked and bought as events with a `bundle_id`; their impressions carry the
oracle too.
Baskets and bundles draw from random streams of their own: the item and campaign events (and
their oracle) are the same as without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from scoring.datagen.events import ACTIVITY_TYPES, BUNDLE_ITEM_SEPARATOR, EventLog

CATEGORIES = (
    "shoes",
    "bags",
    "dresses",
    "jackets",
    "phones",
    "laptops",
    "headphones",
    "cookware",
    "bedding",
    "toys",
    "skincare",
    "sports",
)
NOUN = {
    "shoes": "running shoes",
    "bags": "leather tote bag",
    "dresses": "summer dress",
    "jackets": "winter jacket",
    "phones": "smartphone",
    "laptops": "ultrabook laptop",
    "headphones": "wireless headphones",
    "cookware": "non-stick frying pan",
    "bedding": "cotton duvet cover",
    "toys": "building blocks set",
    "skincare": "hydrating face cream",
    "sports": "yoga mat",
}
# Title words follow latent appeal, so text carries signal for brand-new items (cold start).
WORDS = (
    ("basic", "generic", "budget", "plain"),
    ("classic", "everyday", "practical", "standard"),
    ("premium", "bestselling", "award-winning", "handcrafted"),
)
SEGMENTS = ("new", "casual", "regular", "loyal", "vip")
REGIONS = ("north", "south", "east", "west", "central", "coast", "mountain", "islands")
DAY_S = 86_400.0

# Planted basket complementarity: the pull of one category's item into a basket holding the
# other's (symmetric), in logits.
COMPLEMENTS: dict[tuple[str, str], float] = {
    ("phones", "headphones"): 4.0,
    ("laptops", "bags"): 3.5,
    ("laptops", "headphones"): 3.0,
    ("shoes", "sports"): 3.5,
    ("jackets", "shoes"): 3.5,
    ("dresses", "bags"): 3.5,
    ("jackets", "bags"): 2.5,
    ("skincare", "dresses"): 3.0,
    ("skincare", "bedding"): 2.5,
    ("cookware", "bedding"): 3.5,
    ("toys", "sports"): 3.5,
}
SUBSTITUTE_LOGIT = -1.5  # a second item of the cart item's category (a substitute)
SAME_BRAND_LOGIT = 0.8  # the cart item's brand
ADDITION_APPEAL = 0.4  # the item's latent appeal: small, complements decide (not sales)
# An item already in the cart is never added again (probability 0); a finite stand-in for
# -inf, so that metrics over oracle scores stay finite.
IN_CART_LOGIT = -30.0
# Bundle impressions: P(purchase | click) = sigmoid(BUNDLE_BUY_LOGIT + 3 saving - 0.5 log1p(
# price / typical order value)), 0 while one of its items is out of stock.
BUNDLE_BUY_LOGIT = -1.8


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Size and seed of a synthetic data set; `end` is the newest event time."""

    n_users: int = 1000
    n_items: int = 500
    n_activities: int = 60
    n_item_impressions: int = 40_000
    n_activity_impressions: int = 40_000
    days: int = 35
    # Product views per user outside impressions (about 1.7 a day): what a user's category
    # preferences show through. With 25, preference was too thin to estimate
    # (docs/model-quality.md).
    organic_per_user: float = 60.0
    seed: int = 7
    end: datetime | None = None
    n_bundles: int = 40
    # None: half the campaign impressions (20,000 by default), so that a small test set is
    # not mostly bundles.
    n_bundle_impressions: int | None = None
    # P(0, 1, 2, 3 more items join a purchase's order): about a third more purchases.
    basket_extra_items: tuple[float, float, float, float] = (0.8, 0.11, 0.05, 0.04)

    @property
    def bundle_impressions(self) -> int:
        """`n_bundle_impressions`, or half the campaign impressions when it is None."""
        if self.n_bundle_impressions is None:
            return self.n_activity_impressions // 2
        return self.n_bundle_impressions

    @classmethod
    def large(cls, seed: int = 7) -> SyntheticConfig:
        """About 3 million events: 50k users, 10k items, 300 campaigns, 400 bundles, 8 weeks."""
        return cls(
            50_000,
            10_000,
            300,
            1_500_000,
            400_000,
            days=56,
            organic_per_user=20,
            seed=seed,
            n_bundles=400,
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}_{i:06d}" for i in range(n)], dtype=object)


def affinity_term(pref: np.ndarray) -> np.ndarray:
    """Log-lift of a preference share over uniform, clipped: 0 for an average category."""
    return np.asarray(np.clip(np.log(pref * len(CATEGORIES) + 1e-9), -3.0, 2.0))


def hour_term(t: np.ndarray) -> np.ndarray:
    """Evening shoppers click more: peak at 21:00 UTC."""
    hour = (t // 3600) % 24
    return np.asarray(0.3 * np.cos(2 * np.pi * (hour - 21) / 24))


def item_logit(
    affinity: np.ndarray,
    item_appeal: np.ndarray,
    price_to_aov: np.ndarray,
    user_engagement: np.ndarray,
    hour: np.ndarray,
) -> np.ndarray:
    """The planted item click logit (the oracle's truth)."""
    return np.asarray(
        -2.6
        + 0.9 * affinity
        + 0.9 * item_appeal
        - 0.8 * np.log1p(price_to_aov)
        + 0.5 * user_engagement
        + hour
    )


def activity_logit(
    affinity: np.ndarray,
    activity_appeal: np.ndarray,
    discount_pct: np.ndarray,
    hours_to_end: np.ndarray,
    user_engagement: np.ndarray,
) -> np.ndarray:
    """The planted campaign click logit: relevance, depth of discount and urgency."""
    return np.asarray(
        -2.4
        + 0.8 * affinity
        + 0.8 * activity_appeal
        + 3.0 * discount_pct
        + 0.7 * (hours_to_end < 48.0)
        + 0.5 * user_engagement
    )


def cart_probability(item_appeal: np.ndarray, price_to_aov: np.ndarray) -> np.ndarray:
    """P(add to cart | product viewed)."""
    return _sigmoid(-1.2 + 0.6 * item_appeal - 0.5 * np.log1p(price_to_aov))


BUY_GIVEN_CART = 0.45


def _sample_categories(rng: np.random.Generator, pref: np.ndarray) -> np.ndarray:
    cum = np.cumsum(pref, axis=1)
    r = rng.uniform(size=(len(pref), 1))
    return np.asarray(np.minimum((cum < r).sum(axis=1), pref.shape[1] - 1))


def _item_in_category(
    rng: np.random.Generator, category: np.ndarray, wanted: np.ndarray
) -> np.ndarray:
    order = np.argsort(category, kind="stable")
    counts = np.bincount(category, minlength=len(CATEGORIES))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    wanted = np.where(counts[wanted] > 0, wanted, category[order[0]])
    pick = offsets[wanted] + (rng.uniform(size=len(wanted)) * counts[wanted]).astype(int)
    return np.asarray(order[np.minimum(pick, len(order) - 1)])


def _complement_matrix() -> np.ndarray:
    index = {c: n for n, c in enumerate(CATEGORIES)}
    out = np.zeros((len(CATEGORIES), len(CATEGORIES)))
    for (a, b), logit in COMPLEMENTS.items():
        out[index[a], index[b]] = out[index[b], index[a]] = logit
    return out


COMPLEMENT = _complement_matrix()


def basket_pair_logit(
    cat_a: np.ndarray, brand_a: np.ndarray, cat_b: np.ndarray, brand_b: np.ndarray
) -> np.ndarray:
    """The planted pull of item b into a basket that holds item a (broadcasting arrays).

    Args:
        cat_a, cat_b: category codes (positions in CATEGORIES; -1 unknown).
        brand_a, brand_b: brand codes (-1 unknown).

    Returns:
        COMPLEMENTS[a's category, b's category], plus SUBSTITUTE_LOGIT in the same category,
        plus SAME_BRAND_LOGIT for the same brand.
    """
    known = (cat_a >= 0) & (cat_b >= 0)
    pull = np.where(known, COMPLEMENT[np.maximum(cat_a, 0), np.maximum(cat_b, 0)], 0.0)
    same_brand = (brand_a >= 0) & (brand_a == brand_b)
    return np.asarray(
        pull + SUBSTITUTE_LOGIT * (known & (cat_a == cat_b)) + SAME_BRAND_LOGIT * same_brand
    )


def basket_oracle_logit(
    items: pd.DataFrame, cart: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """The planted log-odds of each candidate being the next item added to its cart.

    The generator adds item j to an order whose cart (the items already in it) is C with
    probability p(j | C) = exp(s(C, j)) / sum of exp(s(C, j')) over the catalogue's items j'
    not in C, where s(C, j) = mean over a in C of basket_pair_logit(a, j) + ADDITION_APPEAL *
    appeal(j): each addition is drawn given every item already in the basket, the pulls of
    the cart's items averaged. This returns log(p / (1 - p)) with that normaliser over
    `items`, so candidates of one cart rank as the truth does and carts compare. (The
    generator leaves out items not launched yet at the order's time; they count here.)

    Args:
        items: the items table with item_id, category, brand and oracle_appeal (synthetic).
        cart: (n, k) object array of cart item ids, "" for an empty slot; ids not in `items`
            count as empty. An empty cart: the appeal term alone.
        candidates: (n,) item ids.

    Returns:
        (n,) float64: the log-odds; IN_CART_LOGIT for a candidate already in its cart (never
        added twice), NaN for a candidate not in `items`.
    """
    ids = pd.Index(items["item_id"].astype(str))
    cat_of = pd.Categorical(items["category"], categories=list(CATEGORIES)).codes.astype(np.int64)
    brand_of = pd.factorize(items["brand"])[0].astype(np.int64)
    weight = np.exp(ADDITION_APPEAL * items["oracle_appeal"].to_numpy(dtype=np.float64))
    candidates = np.asarray(candidates, dtype=object)
    cart = np.asarray(cart, dtype=object).reshape(len(candidates), -1)
    slot = ids.get_indexer(pd.Index(cart.ravel().astype(str))).reshape(cart.shape)
    pos = ids.get_indexer(pd.Index(candidates.astype(str)))
    # A cart item twice counts once.
    slot = np.sort(slot, axis=1)
    slot[:, 1:] = np.where(slot[:, 1:] == slot[:, :-1], -1, slot[:, 1:])
    # The pull of a cart on an item depends on the item's (category, brand) group only: per
    # distinct cart, its mean pull on every group, then the normaliser from the groups' weights.
    group, pairs = pd.factorize(pd.MultiIndex.from_arrays([cat_of, brand_of]))
    g_cat, g_brand = (np.asarray(pairs.get_level_values(n), dtype=np.int64) for n in (0, 1))
    mass = np.bincount(group, weights=weight, minlength=len(pairs))
    carts, which = np.unique(slot, axis=0, return_inverse=True)
    which = which.reshape(-1)
    pull = np.zeros((len(carts), len(pairs)))
    for col in carts.T:
        a = np.maximum(col, 0)
        pair = basket_pair_logit(cat_of[a, None], brand_of[a, None], g_cat, g_brand)
        pull += np.where(col[:, None] >= 0, pair, 0.0)
    pull /= np.maximum((carts >= 0).sum(axis=1), 1)[:, None]
    # The normaliser: every item of the catalogue less the cart's own.
    member = np.maximum(carts, 0)
    own = np.exp(pull[np.arange(len(carts))[:, None], group[member]]) * weight[member]
    norm = (np.exp(pull) * mass).sum(axis=1) - np.where(carts >= 0, own, 0.0).sum(axis=1)
    safe = np.maximum(pos, 0)
    score = np.exp(pull[which, group[safe]]) * weight[safe]
    rest = np.maximum(norm[which] - score, 1e-300)
    logit = np.log(score) - np.log(rest)
    already = (slot == pos[:, None]).any(axis=1) & (pos >= 0)
    return np.where(pos < 0, np.nan, np.where(already, IN_CART_LOGIT, logit))


class _BasketSampler:
    """Draws the next item of each cart from the catalogue with the probability of
    `basket_oracle_logit`, exactly, in O(cart x groups) per draw rather than O(catalogue).

    The pair logit depends on an item only through its (category, brand) group, so the draw
    picks a group with weight exp(cart logit of the group) x the group's sum of
    exp(ADDITION_APPEAL x appeal), then an item of it by that sum's share. Items that cannot
    be added (launched after the order, already in the cart) are rejected and redrawn: what
    is left is the same distribution over the items that can.
    """

    ROWS = 1024  # carts per block (a block holds a few [rows x groups] arrays, in cache)
    ROUNDS = 40  # redraws before a cart is left without an addition

    def __init__(
        self, category: np.ndarray, brand: np.ndarray, appeal: np.ndarray, created: np.ndarray
    ) -> None:
        # The catalogue's (category, brand) groups, numbered in order of first item.
        n_brands = int(brand.max(initial=0)) + 1
        self.group, groups = pd.factorize(category * n_brands + brand)
        g_cat, g_brand = np.divmod(np.asarray(groups, dtype=np.int64), n_brands)
        self.pair = basket_pair_logit(g_cat[:, None], g_brand[:, None], g_cat, g_brand)
        weight = np.exp(ADDITION_APPEAL * appeal)
        self.order = np.argsort(self.group, kind="stable")
        self.cum = np.cumsum(weight[self.order])
        self.count = np.bincount(self.group, minlength=len(groups))
        self.first = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        self.mass = np.bincount(self.group, weights=weight, minlength=len(groups))
        self.log_mass = np.log(self.mass)
        self.created = created

    def draw(self, rng: np.random.Generator, cart: np.ndarray, t: np.ndarray) -> np.ndarray:
        """One more item for each (n, k) cart of item indices (-1 empty) at times t (n,);
        -1 where none was found."""
        out = np.full(len(cart), -1, dtype=np.int64)
        pending = np.arange(len(cart))
        for _ in range(self.ROUNDS):
            if not len(pending):
                break
            item = self._draw(rng, cart[pending])
            ok = (self.created[item] < t[pending]) & (cart[pending] != item[:, None]).all(axis=1)
            out[pending[ok]] = item[ok]
            pending = pending[~ok]
        return out

    def _draw(self, rng: np.random.Generator, cart: np.ndarray) -> np.ndarray:
        picked = np.empty(len(cart), dtype=np.int64)
        for lo in range(0, len(cart), self.ROWS):
            block = cart[lo : lo + self.ROWS]
            in_cart = block >= 0
            rows = self.pair[self.group[np.maximum(block, 0)]]  # (rows, k, groups)
            logit = (
                np.where(in_cart[:, :, None], rows, 0.0).sum(axis=1)
                / np.maximum(in_cart.sum(axis=1), 1)[:, None]
            )
            logit += self.log_mass
            cum = np.cumsum(np.exp(logit - logit.max(axis=1, keepdims=True)), axis=1)
            u = rng.uniform(size=len(block)) * cum[:, -1]
            group = (cum <= u[:, None]).sum(axis=1)  # the first group whose cum passes u
            picked[lo : lo + len(block)] = np.minimum(group, cum.shape[1] - 1)
        # An item of the group, by its share of the group's weight.
        base = np.where(self.first[picked] > 0, self.cum[self.first[picked] - 1], 0.0)
        target = base + rng.uniform(size=len(picked)) * self.mass[picked]
        pos = np.searchsorted(self.cum, target, side="right")
        pos = np.clip(pos, self.first[picked], self.first[picked] + self.count[picked] - 1)
        return np.asarray(self.order[pos])


def bundle_logit(
    affinity: np.ndarray,
    items_appeal: np.ndarray,
    saving_pct: np.ndarray,
    complementarity: np.ndarray,
    user_engagement: np.ndarray,
) -> np.ndarray:
    """The planted bundle click logit: the user's taste for its categories (mean affinity
    term), its items' mean appeal, the saving, how well its items go together (mean pair
    logit) and the user's engagement."""
    return np.asarray(
        -2.8
        + 0.8 * affinity
        + 0.6 * items_appeal
        + 3.0 * saving_pct
        + 0.4 * complementarity
        + 0.5 * user_engagement
    )


@dataclass(frozen=True, slots=True)
class _Catalogue:
    """The synthetic items' latent and listed traits, by item index."""

    ids: np.ndarray
    category: np.ndarray
    brand: np.ndarray
    appeal: np.ndarray
    price: np.ndarray
    created: np.ndarray
    in_stock: np.ndarray


@dataclass(frozen=True, slots=True)
class _Shoppers:
    """The synthetic users' latent traits, by user index."""

    ids: np.ndarray
    pref: np.ndarray
    engagement: np.ndarray
    aov: np.ndarray
    signup: np.ndarray
    weight: np.ndarray


def _basket_additions(
    rng: np.random.Generator,
    sampler: _BasketSampler,
    cat: _Catalogue,
    p_extra: tuple[float, ...],
    anchor: pd.DataFrame,
) -> pd.DataFrame:
    """The items that join each anchor purchase's order (user_id, item_id, t, order key):
    0-3 each, drawn one after another given the cart so far; an add-to-cart, then a purchase."""
    n = len(anchor)
    extra = rng.choice(len(p_extra), n, p=np.asarray(p_extra) / np.sum(p_extra))
    cart = np.full((n, len(p_extra)), -1, dtype=np.int64)
    cart[:, 0] = anchor["item"].to_numpy()
    t0 = anchor["t"].to_numpy(dtype=np.float64)
    elapsed = np.zeros(n)
    parts = []
    for step in range(1, len(p_extra)):
        rows = np.flatnonzero(extra >= step)
        if not len(rows):
            break
        item = sampler.draw(rng, cart[rows, :step], t0[rows])
        elapsed[rows] += rng.uniform(20, 300, len(rows))
        rows, item = rows[item >= 0], item[item >= 0]
        cart[rows, step] = item
        t_cart = t0[rows] + elapsed[rows]
        common = {"user_id": anchor["user_id"].to_numpy()[rows], "item_id": cat.ids[item]}
        key = anchor["okey"].to_numpy()[rows]
        parts.append(
            pd.DataFrame({**common, "event_type": "add_to_cart", "t": t_cart, "okey": key})
        )
        parts.append(
            pd.DataFrame(
                {
                    **common,
                    "event_type": "purchase",
                    "t": t_cart + rng.uniform(5, 120, len(rows)),
                    "price": cat.price[item],
                    "quantity": rng.choice([1, 1, 1, 2], len(rows)),
                    "okey": key,
                }
            )
        )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


@dataclass(frozen=True, slots=True)
class _Bundles:
    """The synthetic bundles: the table, and by bundle index its items (-1 padded) and terms."""

    table: pd.DataFrame
    members: np.ndarray
    price: np.ndarray
    saving: np.ndarray
    start: np.ndarray
    end: np.ndarray


def _synthetic_bundles(
    rng: np.random.Generator, cat: _Catalogue, n_bundles: int, start: float, end: float
) -> _Bundles:
    """2-4 items in stock each, mostly drawn as basket additions (complementary); a few with
    an out-of-stock item; 5-30% off the parts; 60% open-ended, the others for 5-20 days."""
    nb = n_bundles
    stocked = np.flatnonzero(cat.in_stock == 1)
    if not len(stocked):
        nb = 0
    # Out-of-stock items are never drawn (launched "never").
    sampler = _BasketSampler(
        cat.category, cat.brand, cat.appeal, np.where(cat.in_stock == 1, cat.created, np.inf)
    )
    size = rng.choice([2, 3, 4], nb, p=[0.5, 0.3, 0.2])
    members = np.full((nb, 4), -1, dtype=np.int64)
    members[:, 0] = rng.choice(stocked, nb)
    for step in range(1, 4):
        drawn = sampler.draw(rng, members[:, :step], np.full(nb, np.inf))
        random = rng.choice(stocked, nb)
        repeat = (members[:, :step] == random[:, None]).any(axis=1)
        pick = np.where((rng.uniform(size=nb) < 0.85) | repeat, drawn, random)
        members[:, step] = np.where(size > step, pick, -1)
    out_of_stock = np.flatnonzero(cat.in_stock == 0)
    if nb >= 5 and len(out_of_stock):
        few = rng.choice(nb, max(1, round(0.1 * nb)), replace=False)
        swap = rng.choice(out_of_stock, len(few))
        fresh = ~(members[few] == swap[:, None]).any(axis=1)
        members[few[fresh], 1] = swap[fresh]
    # Failed draws (-1) to the end of the row; a tiny catalogue may leave a bundle of one.
    members = np.take_along_axis(members, np.argsort(members < 0, axis=1, kind="stable"), axis=1)
    has = members >= 0
    ok = has.sum(axis=1) >= 2
    members, has = members[ok], has[ok]
    nb = len(members)
    safe = np.maximum(members, 0)
    parts_price = np.where(has, cat.price[safe], 0.0).sum(axis=1)
    discount = rng.uniform(0.05, 0.30, nb)
    price = np.maximum((parts_price * (1 - discount)).round(2), 0.01)
    ready = np.where(has, cat.created[safe], -np.inf).max(axis=1)
    limited = rng.uniform(size=nb) < 0.4
    open_start = np.maximum(ready, start - rng.uniform(0, 30, nb) * DAY_S)
    limited_start = np.maximum(ready, rng.uniform(start, end - 2 * DAY_S, nb))
    limited_end = limited_start + rng.uniform(5, 20, nb) * DAY_S
    b_start = np.floor(np.where(limited, limited_start, open_start))
    b_end = np.where(limited, np.floor(limited_end), np.inf)
    ids = np.where(has, cat.ids[safe], "")
    nouns = np.array([NOUN[c] for c in CATEGORIES], dtype=object)[cat.category[members[:, :2]]]
    table = pd.DataFrame(
        {
            "bundle_id": _ids("b", nb),
            "items": pd.Series(
                [BUNDLE_ITEM_SEPARATOR.join(row[row != ""]) for row in ids], dtype=object
            ),
            "bundle_price": price,
            "name": nouns[:, 0] + " & " + nouns[:, 1] + " bundle",
            "start_at": pd.to_datetime(b_start, unit="s", utc=True),
            # NaT where open-ended (b_end is inf there; a NaN or an inf through to_datetime
            # overflows under np.errstate(all="raise")).
            "end_at": pd.to_datetime(np.where(limited, b_end, 0.0), unit="s", utc=True).where(
                limited
            ),
        }
    )
    return _Bundles(table, members, price, 1.0 - price / parts_price, b_start, b_end)


def _bundle_events(
    rng: np.random.Generator,
    n: int,
    bundles: _Bundles,
    cat: _Catalogue,
    people: _Shoppers,
    start: float,
    end: float,
    first_key: int,
) -> pd.DataFrame:
    """Bundle impressions while a bundle is on (with the oracle), clicks and purchases."""
    nb = len(bundles.members)
    if not nb or not n:
        return pd.DataFrame()
    ub = rng.choice(len(people.ids), n, p=people.weight)
    bb = rng.integers(0, nb, n)
    lo = np.maximum.reduce([np.full(n, start), people.signup[ub], bundles.start[bb]])
    hi = np.minimum(bundles.end[bb], end - 1)
    ok = hi > lo
    ub, bb, lo, hi = ub[ok], bb[ok], lo[ok], hi[ok]
    tb = lo + rng.uniform(size=len(ub)) * (hi - lo)
    has = bundles.members >= 0
    safe = np.maximum(bundles.members, 0)
    size = has.sum(axis=1)
    appeal = np.where(has, cat.appeal[safe], 0.0).sum(axis=1) / size
    # How well the items go together: the mean pair logit over the ordered pairs of them.
    c, b = cat.category[safe], cat.brand[safe]
    pair = basket_pair_logit(c[:, :, None], b[:, :, None], c[:, None, :], b[:, None, :])
    both = has[:, :, None] & has[:, None, :] & ~np.eye(has.shape[1], dtype=bool)
    fit = np.where(both, pair, 0.0).sum(axis=(1, 2)) / both.sum(axis=(1, 2))
    in_stock = np.where(has, cat.in_stock[safe], 1).min(axis=1)
    liking = affinity_term(people.pref[ub[:, None], c[bb]])
    affinity = np.where(has[bb], liking, 0.0).sum(axis=1) / size[bb]
    p_click = _sigmoid(
        bundle_logit(affinity, appeal[bb], bundles.saving[bb], fit[bb], people.engagement[ub])
    )
    buy = _sigmoid(
        BUNDLE_BUY_LOGIT
        + 3.0 * bundles.saving[bb]
        - 0.5 * np.log1p(bundles.price[bb] / (people.aov[ub] + 1.0))
    )
    p_purchase = p_click * buy * in_stock[bb]
    bundle_ids = bundles.table["bundle_id"].to_numpy()
    click = rng.uniform(size=len(ub)) < p_click
    t_click = tb[click] + rng.uniform(5, 600, click.sum())
    bought = rng.uniform(size=click.sum()) < (p_purchase / p_click)[click]
    n_bought = int(bought.sum())
    frames = [
        pd.DataFrame(
            {
                "user_id": people.ids[ub],
                "event_type": "impression",
                "t": tb,
                "p_click": p_click,
                "p_purchase": p_purchase,
                "bundle_id": bundle_ids[bb],
            }
        ),
        pd.DataFrame(
            {
                "user_id": people.ids[ub[click]],
                "event_type": "click",
                "t": t_click,
                "bundle_id": bundle_ids[bb[click]],
            }
        ),
        pd.DataFrame(
            {
                "user_id": people.ids[ub[click][bought]],
                "event_type": "purchase",
                "t": t_click[bought] + rng.uniform(60, 3600, n_bought),
                "price": bundles.price[bb[click][bought]],
                "quantity": 1,
                "bundle_id": bundle_ids[bb[click][bought]],
                "okey": first_key + np.arange(n_bought),
            }
        ),
    ]
    return pd.concat(frames, ignore_index=True).assign(item_id="")


def generate(cfg: SyntheticConfig) -> EventLog:
    """Generates the event log for `cfg`; deterministic for a given seed and end time."""
    rng = np.random.default_rng(cfg.seed)
    # Default end: today 00:00 UTC, so re-running the same day gives the same data (and model).
    end_dt = cfg.end or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = end_dt.timestamp()
    start = (end_dt - timedelta(days=cfg.days)).timestamp()
    k = len(CATEGORIES)

    # Users: engagement, category preferences (sparse Dirichlet), typical order value.
    nu = cfg.n_users
    engagement = rng.normal(0.0, 0.8, nu)
    pref = rng.gamma(0.3, size=(nu, k)) + 1e-6
    pref /= pref.sum(axis=1, keepdims=True)
    aov = np.exp(rng.normal(3.6, 0.5, nu))
    new_user = rng.uniform(size=nu) < 0.2
    signup = np.where(
        new_user, rng.uniform(start, end - 3600, nu), start - rng.uniform(1, 700, nu) * DAY_S
    )
    seg = np.clip(np.digitize(engagement + rng.normal(0, 0.4, nu), [-0.8, -0.2, 0.4, 1.0]), 0, 4)
    users = pd.DataFrame(
        {
            "user_id": _ids("u", nu),
            "segment": np.array(SEGMENTS, dtype=object)[np.where(new_user, 0, seg)],
            "region": np.array(REGIONS, dtype=object)[rng.integers(0, len(REGIONS), nu)],
            "membership_level": rng.choice(3, nu, p=[0.6, 0.3, 0.1]),
            "age_bucket": rng.integers(0, 5, nu),
            "signup_at": pd.to_datetime(signup, unit="s", utc=True).floor("s"),
        }
    )

    # Items: brand quality + noise = appeal; it shows in rating, CTR, sales and title words.
    ni = cfg.n_items
    brand_quality = rng.normal(0.0, 0.5, 40)
    brand = rng.integers(0, 40, ni)
    appeal = brand_quality[brand] + rng.normal(0.0, 0.6, ni)
    category = rng.integers(0, k, ni)
    price = np.exp(rng.normal(3.5 + 0.15 * (category % 4), 0.6, ni)).round(2)
    new_item = rng.uniform(size=ni) < 0.2
    created = np.where(
        new_item, rng.uniform(start, end - 3600, ni), start - rng.uniform(1, 365, ni) * DAY_S
    )
    tier = np.digitize(appeal + rng.normal(0, 0.3, ni), [-0.5, 0.5])
    word = np.array(
        [WORDS[t][j] for t, j in zip(tier, rng.integers(0, 4, ni), strict=True)], dtype=object
    )
    brand_name = np.array([f"brand{b:02d}" for b in range(40)], dtype=object)[brand]
    noun = np.array([NOUN[c] for c in CATEGORIES], dtype=object)[category]
    rating = np.clip(3.6 + 0.6 * appeal + rng.normal(0, 0.3, ni), 1, 5).round(1)
    items = pd.DataFrame(
        {
            "item_id": _ids("i", ni),
            "category": np.array(CATEGORIES, dtype=object)[category],
            "brand": brand_name,
            "price": price,
            "title": word + " " + noun + " by " + brand_name,
            "description": "A " + word + " " + noun + " for everyday use.",
            "rating": np.where(rng.uniform(size=ni) < 0.1, np.nan, rating),
            "in_stock": (rng.uniform(size=ni) > 0.05).astype(np.int64),
            "created_at": pd.to_datetime(created, unit="s", utc=True).floor("s"),
            # The latent appeal, for basket_oracle_logit (the build writes item_oracle).
            "oracle_appeal": appeal,
        }
    )

    # Campaigns: type, discount depth, 1-2 target categories, a start and an end.
    na = cfg.n_activities
    act_type = rng.integers(0, len(ACTIVITY_TYPES), na)
    discount = rng.choice([0.05, 0.1, 0.2, 0.3, 0.5], na)
    act_appeal = rng.normal(0.0, 0.6, na)
    duration = np.where(act_type == 1, rng.uniform(1, 2, na), rng.uniform(3, 21, na)) * DAY_S
    act_start = rng.uniform(start - 7 * DAY_S, end - DAY_S, na)
    act_end = act_start + duration
    target_1 = rng.integers(0, k, na)
    target_2 = np.where(rng.uniform(size=na) < 0.5, rng.integers(0, k, na), -1)
    cats = np.array(CATEGORIES, dtype=object)
    activities = pd.DataFrame(
        {
            "activity_id": _ids("a", na),
            "activity_type": np.array(ACTIVITY_TYPES, dtype=object)[act_type],
            "discount_pct": discount,
            "start_at": pd.to_datetime(act_start, unit="s", utc=True).floor("s"),
            "end_at": pd.to_datetime(act_end, unit="s", utc=True).floor("s"),
            "target_categories": np.where(
                target_2 >= 0, cats[target_1] + "|" + cats[np.maximum(target_2, 0)], cats[target_1]
            ),
        }
    )

    events: list[pd.DataFrame] = []
    user_weight = np.exp(0.5 * engagement)
    user_weight /= user_weight.sum()

    def emit(
        kind: str, uu: np.ndarray, tt: np.ndarray, ii: np.ndarray | None = None, **cols: object
    ) -> None:
        frame = {
            "user_id": users["user_id"].to_numpy()[uu],
            "item_id": items["item_id"].to_numpy()[ii] if ii is not None else "",
            "event_type": kind,
            "t": tt,
            **cols,
        }
        events.append(pd.DataFrame(frame))

    def funnel(uu: np.ndarray, ii: np.ndarray, tt: np.ndarray) -> None:
        """Product view -> add to cart -> purchase, with the planted probabilities."""
        emit("view", uu, tt, ii)
        ratio = price[ii] / (aov[uu] + 1.0)
        cart = rng.uniform(size=len(uu)) < cart_probability(appeal[ii], ratio)
        t_cart = tt[cart] + rng.uniform(30, 900, cart.sum())
        emit("add_to_cart", uu[cart], t_cart, ii[cart])
        buy = rng.uniform(size=cart.sum()) < BUY_GIVEN_CART
        qty = rng.choice([1, 1, 1, 2, 3], buy.sum())
        emit(
            "purchase",
            uu[cart][buy],
            t_cart[buy] + rng.uniform(60, 3600, buy.sum()),
            ii[cart][buy],
            price=price[ii[cart][buy]],
            quantity=qty,
        )

    # Item impressions: half from the user's preferred categories (as retrieval would), half
    # exploration; only after sign-up and item launch.
    n = cfg.n_item_impressions
    uu = rng.choice(nu, n, p=user_weight)
    ii = np.where(
        rng.uniform(size=n) < 0.5,
        _item_in_category(rng, category, _sample_categories(rng, pref[uu])),
        rng.integers(0, ni, n),
    )
    lo = np.maximum.reduce([np.full(n, start), signup[uu], created[ii]])
    tt = lo + rng.uniform(size=n) * (end - 1 - lo)
    ratio = price[ii] / (aov[uu] + 1.0)
    p_click = _sigmoid(
        item_logit(
            affinity_term(pref[uu, category[ii]]),
            appeal[ii],
            ratio,
            engagement[uu],
            hour_term(tt),
        )
    )
    p_purchase = p_click * cart_probability(appeal[ii], ratio) * BUY_GIVEN_CART
    emit("impression", uu, tt, ii, p_click=p_click, p_purchase=p_purchase)
    click = rng.uniform(size=n) < p_click
    t_click = tt[click] + rng.uniform(5, 600, click.sum())
    emit("click", uu[click], t_click, ii[click])
    funnel(uu[click], ii[click], t_click + 2)

    # Organic browsing: product views in preferred categories.
    per_user = rng.poisson(cfg.organic_per_user * np.exp(0.3 * engagement))
    uo = np.repeat(np.arange(nu), per_user)
    io = _item_in_category(rng, category, _sample_categories(rng, pref[uo]))
    lo = np.maximum.reduce([np.full(len(uo), start), signup[uo], created[io]])
    funnel(uo, io, lo + rng.uniform(size=len(uo)) * (end - 1 - lo))

    # Campaign impressions while the campaign runs.
    n = cfg.n_activity_impressions
    ua = rng.choice(nu, n, p=user_weight)
    aa = rng.integers(0, na, n)
    lo = np.maximum.reduce([np.full(n, start), signup[ua], act_start[aa]])
    hi = np.minimum(act_end[aa], end - 1)
    ok = hi > lo
    ua, aa, lo, hi = ua[ok], aa[ok], lo[ok], hi[ok]
    ta = lo + rng.uniform(size=len(ua)) * (hi - lo)
    target_pref = np.maximum(
        pref[ua, target_1[aa]], np.where(target_2[aa] >= 0, pref[ua, target_2[aa]], 0.0)
    )
    p_act = _sigmoid(
        activity_logit(
            affinity_term(target_pref),
            act_appeal[aa],
            discount[aa],
            (act_end[aa] - ta) / 3600.0,
            engagement[ua],
        )
    )
    act_ids = activities["activity_id"].to_numpy()
    emit("impression", ua, ta, activity_id=act_ids[aa], p_click=p_act, p_purchase=np.nan)
    click = rng.uniform(size=len(ua)) < p_act
    emit(
        "click",
        ua[click],
        ta[click] + rng.uniform(5, 600, click.sum()),
        activity_id=act_ids[aa][click],
    )

    # Every purchase so far opens an order (key: its row); then baskets and bundles, each from
    # a random stream of its own, so that the events above stay the same.
    frame = pd.concat(events, ignore_index=True)
    bought = np.flatnonzero(
        (frame["event_type"].to_numpy() == "purchase") & (frame["t"].to_numpy() < end)
    )
    okey = np.full(len(frame), -1, dtype=np.int64)
    okey[bought] = np.arange(len(bought))
    frame["okey"] = okey
    cat = _Catalogue(
        items["item_id"].to_numpy(),
        category,
        brand,
        appeal,
        price,
        created,
        items["in_stock"].to_numpy(),
    )
    people = _Shoppers(users["user_id"].to_numpy(), pref, engagement, aov, signup, user_weight)
    sampler = _BasketSampler(category, brand, appeal, created)
    anchor = frame.loc[bought, ["user_id", "t", "okey"]].assign(
        item=pd.Index(cat.ids).get_indexer(frame.loc[bought, "item_id"])
    )
    added = _basket_additions(
        np.random.default_rng([cfg.seed, 22, 0]), sampler, cat, cfg.basket_extra_items, anchor
    )
    bundles = _synthetic_bundles(
        np.random.default_rng([cfg.seed, 22, 1]), cat, cfg.n_bundles, start, end
    )
    on_bundles = _bundle_events(
        np.random.default_rng([cfg.seed, 22, 2]),
        cfg.bundle_impressions,
        bundles,
        cat,
        people,
        start,
        end,
        len(bought),
    )

    frame = pd.concat([frame, added, on_bundles], ignore_index=True)
    t = frame["t"].to_numpy()
    kept = np.flatnonzero(t < end)
    frame = frame.take(kept[np.argsort(t[kept], kind="stable")]).reset_index(drop=True)
    frame["timestamp"] = pd.to_datetime(frame.pop("t"), unit="s", utc=True).dt.floor("s")
    for col in ("activity_id", "bundle_id"):
        frame[col] = frame[col].fillna("") if col in frame else ""
    frame["quantity"] = frame["quantity"].astype("float64")
    # Orders numbered by their first event in time.
    key = frame.pop("okey").fillna(-1).to_numpy(dtype=np.int64)
    number = pd.factorize(pd.Series(key).where(key >= 0))[0]
    order_id = np.full(len(frame), "", dtype=object)
    order_id[key >= 0] = [f"o_{n:07d}" for n in number[key >= 0]]
    frame["order_id"] = order_id
    return EventLog(frame, items, users, activities, bundles.table)
