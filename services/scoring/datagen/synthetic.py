"""Synthetic e-commerce data with a planted, known click probability (the oracle).

Writes the Parquet tables the Feast repo reads (profiles, weekly behaviour and catalogue
snapshots) and labelled impression logs for training. Latent user engagement, item appeal and
activity appeal drive both the observed aggregates and the click probability, so a model can
learn the truth only through the features, as with real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

N_CATEGORIES = 12
GLOBAL_CTR = 0.05


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Size and seed of a synthetic data set; `end` is the newest event time."""

    n_users: int = 1000
    n_items: int = 500
    n_activities: int = 60
    n_item_impressions: int = 40_000
    n_activity_impressions: int = 20_000
    weeks: int = 4
    seed: int = 7
    end: datetime | None = None


@dataclass(frozen=True, slots=True)
class SyntheticData:
    """The generated tables, keyed by file stem (`user_profile` -> data/user_profile.parquet)."""

    tables: dict[str, pd.DataFrame]
    end: datetime

    def write(self, data_dir: Path) -> list[Path]:
        """Writes every table as Parquet into `data_dir`, replacing earlier files."""
        data_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, df in self.tables.items():
            path = data_dir / f"{name}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            df.to_parquet(tmp, index=False)
            tmp.replace(path)
            paths.append(path)
        return paths


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}_{i:06d}" for i in range(n)], dtype=object)


def item_logit(
    category_match: np.ndarray,
    item_appeal: np.ndarray,
    price_to_aov: np.ndarray,
    user_engagement: np.ndarray,
) -> np.ndarray:
    """The planted item click logit (the oracle's truth)."""
    return np.asarray(
        -2.4
        + 1.8 * category_match
        + 1.0 * item_appeal
        - 0.9 * np.log1p(price_to_aov)
        + 0.7 * user_engagement
    )


def activity_logit(
    target_match: np.ndarray,
    activity_appeal: np.ndarray,
    discount_pct: np.ndarray,
    hours_to_end: np.ndarray,
    user_engagement: np.ndarray,
) -> np.ndarray:
    """The planted activity click logit: relevance, depth of discount and urgency."""
    return np.asarray(
        -2.2
        + 1.5 * target_match
        + 0.8 * activity_appeal
        + 3.0 * discount_pct
        + 0.7 * (hours_to_end < 48.0)
        + 0.7 * user_engagement
    )


def generate(cfg: SyntheticConfig) -> SyntheticData:
    """Generates all tables for `cfg`; deterministic for a given seed and end time."""
    rng = np.random.default_rng(cfg.seed)
    # Default end: today 00:00 UTC, so re-running the same day gives the same data (and model).
    end = cfg.end or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(weeks=cfg.weeks)
    snapshots = [start + timedelta(weeks=w) for w in range(cfg.weeks + 1)]
    snapshots[-1] = end - timedelta(minutes=1)

    # Users: latent engagement drives behaviour aggregates and click propensity.
    users = _ids("u", cfg.n_users)
    engagement = rng.normal(0.0, 0.8, cfg.n_users)
    favorite = rng.integers(0, N_CATEGORIES, cfg.n_users)
    aov = np.exp(rng.normal(3.6, 0.5, cfg.n_users))  # typical order value, ~37
    user_profile = pd.DataFrame(
        {
            "user_id": users,
            "age_bucket": rng.integers(0, 5, cfg.n_users),
            "membership_level": rng.choice(3, cfg.n_users, p=[0.6, 0.3, 0.1]),
            "tenure_days": rng.uniform(1, 2000, cfg.n_users).astype("float32"),
            "favorite_category": favorite,
            "event_timestamp": start - timedelta(days=30),
        }
    )
    behaviour = []
    for ts in snapshots:
        noise = rng.normal(0.0, 0.15, cfg.n_users)
        ctr = _sigmoid(np.log(GLOBAL_CTR / (1 - GLOBAL_CTR)) + 0.8 * engagement + noise)
        views = rng.poisson(20 * np.exp(0.3 * engagement)).astype("float32")
        purchases = rng.poisson(1.5 * np.exp(0.5 * engagement)).astype("float32")
        behaviour.append(
            pd.DataFrame(
                {
                    "user_id": users,
                    "views_7d": views,
                    "clicks_7d": rng.binomial(views.astype(int), ctr).astype("float32"),
                    "purchases_30d": purchases,
                    "spend_30d": (purchases * aov * rng.uniform(0.8, 1.2, cfg.n_users)).astype(
                        "float32"
                    ),
                    "avg_order_value": (aov * rng.uniform(0.9, 1.1, cfg.n_users)).astype("float32"),
                    "ctr_30d": ctr.astype("float32"),
                    "event_timestamp": ts,
                }
            )
        )

    # Items: latent appeal shows through rating, CTR and sales.
    items = _ids("i", cfg.n_items)
    appeal = rng.normal(0.0, 0.8, cfg.n_items)
    category = rng.integers(0, N_CATEGORIES, cfg.n_items)
    price = np.exp(rng.normal(3.5, 0.8, cfg.n_items)).astype("float32")
    item_rows = []
    for ts in snapshots:
        noise = rng.normal(0.0, 0.2, cfg.n_items)
        item_rows.append(
            pd.DataFrame(
                {
                    "item_id": items,
                    "category": category,
                    "price": price,
                    "rating": np.clip(3.6 + 0.6 * appeal + rng.normal(0, 0.3, cfg.n_items), 1, 5)
                    .round(1)
                    .astype("float32"),
                    "ctr_7d": _sigmoid(-3.0 + appeal + noise).astype("float32"),
                    "sales_7d": rng.poisson(10 * np.exp(0.5 * appeal)).astype("float32"),
                    "in_stock": (rng.uniform(size=cfg.n_items) > 0.05).astype("int64"),
                    "event_timestamp": ts,
                }
            )
        )

    # Activities: type, discount depth, target category, a fixed end time.
    activities = _ids("a", cfg.n_activities)
    act_appeal = rng.normal(0.0, 0.6, cfg.n_activities)
    act_type = rng.integers(0, 4, cfg.n_activities)
    discount = rng.choice([0.05, 0.1, 0.2, 0.3, 0.5], cfg.n_activities).astype("float32")
    target_cat = rng.integers(0, N_CATEGORIES, cfg.n_activities)
    end_ts = end.timestamp() + rng.uniform(-10, 21, cfg.n_activities) * 86400.0
    act_rows = []
    for ts in snapshots:
        act_rows.append(
            pd.DataFrame(
                {
                    "activity_id": activities,
                    "activity_type": act_type,
                    "discount_pct": discount,
                    "target_category": target_cat,
                    "participants_7d": rng.poisson(50 * np.exp(act_appeal)).astype("float32"),
                    "end_ts": end_ts,
                    "event_timestamp": ts,
                }
            )
        )

    span = (end - start).total_seconds()
    # Item impressions with labels from the planted probability.
    n = cfg.n_item_impressions
    u = rng.integers(0, cfg.n_users, n)
    # Candidates lean towards the user's favourite category, as a retrieval stage would.
    i = rng.integers(0, cfg.n_items, n)
    req = start.timestamp() + rng.uniform(0.02, 1.0, n) * span
    p_item = _sigmoid(
        item_logit(
            (category[i] == favorite[u]).astype(float),
            appeal[i],
            price[i] / (aov[u] + 1.0),
            engagement[u],
        )
    )
    item_impressions = pd.DataFrame(
        {
            "user_id": users[u],
            "item_id": items[i],
            "event_timestamp": pd.to_datetime(req, unit="s", utc=True),
            "request_ts": req.astype("int64"),
            "clicked": (rng.uniform(size=n) < p_item).astype("int64"),
            "p_click": p_item,
        }
    ).sort_values("event_timestamp", ignore_index=True)

    # Activity impressions: only while the activity runs.
    n = cfg.n_activity_impressions
    u = rng.integers(0, cfg.n_users, n)
    a = rng.integers(0, cfg.n_activities, n)
    req = start.timestamp() + rng.uniform(0.02, 1.0, n) * span
    live = req < end_ts[a]
    u, a, req = u[live], a[live], req[live]
    hours = np.clip((end_ts[a] - req) / 3600.0, 0, 24 * 60)
    p_act = _sigmoid(
        activity_logit(
            (target_cat[a] == favorite[u]).astype(float),
            act_appeal[a],
            discount[a],
            hours,
            engagement[u],
        )
    )
    activity_impressions = pd.DataFrame(
        {
            "user_id": users[u],
            "activity_id": activities[a],
            "event_timestamp": pd.to_datetime(req, unit="s", utc=True),
            "request_ts": req.astype("int64"),
            "clicked": (rng.uniform(size=len(u)) < p_act).astype("int64"),
            "p_click": p_act,
        }
    ).sort_values("event_timestamp", ignore_index=True)

    def with_utc(df: pd.DataFrame) -> pd.DataFrame:
        df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
        return df

    return SyntheticData(
        tables={
            "user_profile": with_utc(user_profile),
            "user_behavior": with_utc(pd.concat(behaviour, ignore_index=True)),
            "item_stats": with_utc(pd.concat(item_rows, ignore_index=True)),
            "activity_stats": with_utc(pd.concat(act_rows, ignore_index=True)),
            "impressions_item": item_impressions,
            "impressions_activity": activity_impressions,
        },
        end=end,
    )
