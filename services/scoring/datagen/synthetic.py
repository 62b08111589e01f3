"""A synthetic e-commerce event stream with a planted, known click and purchase probability.

Latent user traits (engagement, category preferences, typical spend), item traits (appeal,
price, category) and campaign traits drive an event stream: impressions of items and
campaigns, clicks, product views, add-to-carts and purchases, plus organic browsing. Every
impression carries its true probabilities (`p_click`, `p_purchase`: the oracle), a function of
(user, candidate, time). The stream goes through the same feature build as a user's imported
log (scoring.datagen.build), so a model learns the truth only through the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from scoring.datagen.events import ACTIVITY_TYPES, EventLog

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

    @classmethod
    def large(cls, seed: int = 7) -> SyntheticConfig:
        """About 3 million events: 50k users, 10k items, 300 campaigns, 8 weeks."""
        return cls(50_000, 10_000, 300, 1_500_000, 400_000, days=56, organic_per_user=20, seed=seed)


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

    frame = pd.concat(events, ignore_index=True)
    frame = frame[frame["t"] < end].sort_values("t", kind="stable", ignore_index=True)
    frame["timestamp"] = pd.to_datetime(frame.pop("t"), unit="s", utc=True).dt.floor("s")
    frame["activity_id"] = frame["activity_id"].fillna("")
    frame["quantity"] = frame["quantity"].astype("float64")
    return EventLog(frame, items, users, activities)
