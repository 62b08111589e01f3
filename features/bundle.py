"""Bundle features: a named set of items sold together at a bundle price.

`bundle_stats` (built by scoring.datagen.bundles, every value from events strictly before the
row's time): one row when the bundle appears (its start, or its first event), then one per full
hour (like activity_stats: a young bundle is ranked by its first hours' response). Its price
against its parts, its items' statistics as of the snapshot (the item_stats row of each item at
or before it: their CTR stands for their appeal), stock, how often its items and their
categories were bought together in earlier baskets (complements; a category pair is seen long
before an item pair is), and the bundle's own impressions, clicks and purchases, with its
all-time CTR (also as log-odds: clicks add up on that scale), the CTR expected of bundles
with its traits (fitted on earlier bundles' clicks) and its CTR shrunk towards that. The
request-time view `bundle_request_features` matches its items and categories against the
shopper's history: the categories' share of the user's engagement and their smoothed log-lift
in the user's 90-day views and impressions (on_demand.py's category preference), and its
price against the user's order value.
"""

from datetime import timedelta

import pandas as pd
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32, Float64, Int64

from collaborative import user_recent
from defaults import array_inputs, feature, float_outputs, table_view
from entities import bundle
from on_demand import request_context
from user import user_affinity, user_behavior

BUNDLE_SLOTS = 10  # scoring.datagen.bundles.BUNDLE_SLOTS

_stats = [
    feature("n_items", Float32, default=2.0, description="distinct items in the bundle"),
    feature("bundle_price", Float32, default=0.0),
    feature("parts_price", Float32, default=0.0, description="sum of its items' prices"),
    feature("price_ratio", Float32, default=1.0, description="bundle_price / parts_price"),
    feature("saving_pct", Float32, default=0.0, description="1 - price_ratio (a fraction)"),
    feature("main_category", Int64, default=-1, description="most common item category code"),
    feature("n_categories", Float32, default=1.0),
    feature("items_sales_7d_mean", Float32, default=0.0),
    feature("items_sales_30d_min", Float32, default=0.0),
    feature("items_sales_30d_mean", Float32, default=0.0),
    feature("items_rating_mean", Float32, default=3.5),
    feature(
        "items_ctr_logit_mean",
        Float32,
        default=-2.94,
        description="mean log-odds of its items' smoothed 30-day CTR: their appeal",
    ),
    feature("all_in_stock", Int64, default=1, description="0: an item is unavailable"),
    feature("in_stock_share", Float32, default=1.0),
    feature(
        "internal_copurchase",
        Float32,
        default=0.0,
        description="mean smoothed PMI of its item pairs in earlier baskets",
    ),
    feature(
        "category_lift_mean",
        Float32,
        default=0.0,
        description="mean smoothed log-lift of its items' category pairs in earlier baskets",
    ),
    feature(
        "same_category_share",
        Float32,
        default=0.0,
        description="share of its item pairs in one category (substitutes)",
    ),
    feature("impressions_7d", Float32, default=0.0),
    feature("clicks_7d", Float32, default=0.0),
    feature("ctr_30d", Float32, default=0.05, description="smoothed towards the global CTR"),
    feature("purchases_30d", Float32, default=0.0),
    feature("impressions_total", Float32, default=0.0),
    feature("clicks_total", Float32, default=0.0),
    feature(
        "ctr_total",
        Float32,
        default=0.05,
        description="all-time CTR, smoothed towards every bundle's CTR (20 impressions)",
    ),
    feature("ctr_total_logit", Float32, default=-2.94, description="log-odds of ctr_total"),
    feature(
        "ctr_prior_logit",
        Float32,
        default=-2.94,
        description="CTR log-odds of bundles with its traits (earlier bundles' fit)",
    ),
    feature(
        "ctr_eb_logit",
        Float32,
        default=-2.94,
        description="log-odds of its all-time CTR shrunk to ctr_prior_logit (100 impressions)",
    ),
    feature("start_ts", Float64, default=0.0, description="Unix seconds"),
    feature("end_ts", Float64, default=0.0, description="Unix seconds; far future when none"),
    *[
        feature(f"bundle_item_{k:02d}", Float64, default=-1.0, description="item code, -1 none")
        for k in range(BUNDLE_SLOTS)
    ],
    *[
        feature(f"bundle_category_{k:02d}", Float64, default=-1.0, description="category code")
        for k in range(BUNDLE_SLOTS)
    ],
]
bundle_stats = table_view(
    "bundle_stats", bundle, owner="merchandising", ttl=timedelta(days=2), schema=_stats
)


_bundle_request_features_schema, _bundle_request_features_defaults = float_outputs(
    user_bundle_items_bought=0.0,
    user_bundle_items_seen_share=0.0,
    user_bundle_category_affinity_mean=1.0 / 16,
    user_bundle_category_affinity_max=1.0 / 16,
    user_bundle_category_view_affinity_mean=0.0,
    user_bundle_category_view_affinity_max=0.0,
    user_bundle_category_impression_affinity_mean=0.0,
    bundle_price_to_aov=1.0,
    days_to_end=365.0,
    days_since_start=30.0,
)


@on_demand_feature_view(
    sources=[
        bundle_stats[
            [
                *(f"bundle_item_{k:02d}" for k in range(BUNDLE_SLOTS)),
                *(f"bundle_category_{k:02d}" for k in range(BUNDLE_SLOTS)),
                "start_ts",
                "end_ts",
                "bundle_price",
            ]
        ],
        user_recent[
            [
                *(f"recent_item_{k:02d}" for k in range(50)),
                *(f"recent_purchases_{k:02d}" for k in range(50)),
            ]
        ],
        user_affinity[
            [
                f"{t}_{s:02d}"
                for t in ("affinity", "views_90d", "impressions_90d")
                for s in range(16)
            ]
        ],
        user_behavior[["avg_order_value_30d"]],
        request_context,
    ],
    schema=_bundle_request_features_schema,
    mode="pandas",
    tags=array_inputs() | _bundle_request_features_defaults,
)
def bundle_request_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # The bundle against the shopper. Missing (NaN: the default and indicator apply) when the
    # bundle has no row or the user no history row; 0 when they share nothing.
    # - user_bundle_items_bought: the bundle's items among the user's recent items with a
    #   purchase; user_bundle_items_seen_share: the share of its items among the recent items.
    # - user_bundle_category_affinity_mean / _max: the user's 30-day engagement share of each
    #   of its items' categories (the category's slot, code % 16).
    # - user_bundle_category_view_affinity_mean / _max, ..._impression_affinity_mean: the
    #   log-lift of each of its items' categories in the user's 90-day product views (item
    #   impressions) over a uniform share, with a Dirichlet prior of 0.25 per slot, as
    #   on_demand.item_request_features does for an item's category; the mean over its items.
    # - bundle_price_to_aov: its price against the user's 30-day average order value.
    # - days_to_end / days_since_start: clipped to [-7, 365] days.
    # Feast runs this from its source text: keep imports inside and call no module helpers.
    # A DataFrame in, a DataFrame out (Feast, training); float64 numpy columns in, float32
    # columns out (the gateway, `inputs: arrays`): the same arithmetic on the same block.
    import numpy as np
    import pandas as pd

    b, k, s = 10, 50, 16
    names = [
        "request_ts", "start_ts", "end_ts", "bundle_price", "avg_order_value_30d",
        *(f"{p}_{n:02d}" for p in ("bundle_item", "bundle_category") for n in range(b)),
        *(f"{p}_{n:02d}" for p in ("recent_item", "recent_purchases") for n in range(k)),
        *(f"{p}_{n:02d}" for p in ("affinity", "views_90d", "impressions_90d") for n in range(s)),
    ]  # fmt: skip
    if isinstance(inputs, pd.DataFrame):
        frame = inputs[names]
        try:
            x = frame.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError):  # e.g. pd.NA in an object column
            x = frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
    else:
        x = np.array([inputs[name] for name in names], dtype="float64").T
    rows = len(x)
    ts, start, end, price, aov = x[:, :5].T
    at = 5
    items, categories = x[:, at : at + b], x[:, at + b : at + 2 * b]
    at += 2 * b
    recent, bought = x[:, at : at + k], x[:, at + k : at + 2 * k]
    affinity = x[:, at + 2 * k : at + 2 * k + s]
    views = x[:, at + 2 * k + s : at + 2 * k + 2 * s]
    shown = x[:, at + 2 * k + 2 * s : at + 2 * k + 3 * s]

    in_bundle = items >= 0  # NaN (no row) and -1 (an empty slot) are no item
    n_items = in_bundle.sum(axis=1)
    history = recent[:, 0] == recent[:, 0]
    known = history & (n_items > 0)
    match = items[:, :, None] == recent[:, None, :]  # [rows, b, k]; NaN matches nothing
    seen = in_bundle & match.any(axis=2)
    purchased = in_bundle & (match & (bought[:, None, :] > 0)).any(axis=2)
    nan = np.nan
    has_category = categories >= 0
    n_categories = has_category.sum(axis=1)
    slot = np.where(has_category, categories % s, 0).astype("int64")
    share = affinity[np.arange(rows)[:, None], slot]  # [rows, b]; NaN without an affinity row
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_share = np.where(has_category, share, 0.0).sum(axis=1) / n_categories
    max_share = np.where(has_category, share, -np.inf).max(axis=1, initial=-np.inf)
    at_rows = np.arange(rows)[:, None]

    def lift(counts: np.ndarray) -> np.ndarray:  # [rows, b]; NaN without an affinity row
        value = (counts[at_rows, slot] + 0.25) / (counts.sum(axis=1)[:, None] + s * 0.25)
        return np.log(s * value)

    view_lift, shown_lift = lift(views), lift(shown)
    with np.errstate(invalid="ignore", divide="ignore"):
        view_mean = np.where(has_category, view_lift, 0.0).sum(axis=1) / n_categories
        shown_mean = np.where(has_category, shown_lift, 0.0).sum(axis=1) / n_categories
    view_max = np.where(has_category, view_lift, -np.inf).max(axis=1, initial=-np.inf)
    out = {
        "user_bundle_items_bought": np.where(known, purchased.sum(axis=1), nan),
        "user_bundle_items_seen_share": np.where(
            known, seen.sum(axis=1) / np.maximum(n_items, 1), nan
        ),
        "user_bundle_category_affinity_mean": np.where(n_categories > 0, mean_share, nan),
        "user_bundle_category_affinity_max": np.where(n_categories > 0, max_share, nan),
        "user_bundle_category_view_affinity_mean": np.where(n_categories > 0, view_mean, nan),
        "user_bundle_category_view_affinity_max": np.where(n_categories > 0, view_max, nan),
        "user_bundle_category_impression_affinity_mean": np.where(
            n_categories > 0, shown_mean, nan
        ),
        # A spend of 0 (free orders) says nothing about price: missing, not a division by 0.
        "bundle_price_to_aov": price / np.where(aov > 0, aov, np.nan),
        "days_to_end": np.clip((end - ts) / 86400.0, -7.0, 365.0),
        "days_since_start": np.clip((ts - start) / 86400.0, -7.0, 365.0),
    }
    columns = {name: v.astype("float32") for name, v in out.items()}
    if isinstance(inputs, pd.DataFrame):
        return pd.DataFrame(columns, index=inputs.index)
    return columns
