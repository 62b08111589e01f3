"""Collaborative and sequential features: who bought what, recently, and what goes with it.

Stored views (built by scoring.datagen.collaborative, every row from interactions strictly
before its time): the user's recent items (`user_recent`, daily), an item's code and most
co-occurring items (`item_cooccurrence`), and implicit-ALS vectors of users and items
(`user_mf`, `item_mf`, refitted weekly). They are inputs of the request-time view
`item_collaborative_features`, which combines them for the candidate; the model reads only
its outputs (raw vectors change basis at every refit, and ids mean nothing to a network).

Items are matched by code (a 52-bit hash of the id, exact in a float64). A user or item vector
is used only with one of the same fit (`*_mf_fit`): vectors of two fits are not comparable.
"""

from datetime import timedelta
from functools import partial

import pandas as pd
from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import FeastType, Float32, Float64

from defaults import array_inputs, feature, float_outputs, table_view
from entities import item, user
from on_demand import request_context

RECENT_ITEMS = 50  # scoring.datagen.collaborative.RECENT_ITEMS
NEIGHBOURS = 30  # scoring.datagen.collaborative.NEIGHBOURS
FACTORS = 32  # scoring.datagen.factorization.ALSConfig.factors

user_view = partial(table_view, entity=user, owner="personalization")
item_view = partial(table_view, entity=item, owner="catalog")


def _many(prefix: str, n: int, dtype: FeastType, default: float, description: str) -> list[Field]:
    return [
        feature(f"{prefix}_{k:02d}", dtype, default=default, description=description)
        for k in range(n)
    ]


# A row at each midnight after a day with new interactions (the state changes only then).
user_recent = user_view(
    "user_recent",
    ttl=timedelta(days=365),
    schema=[
        *_many("recent_item", RECENT_ITEMS, Float64, -1.0, "item code, most recent first"),
        *_many("recent_count", RECENT_ITEMS, Float32, 0.0, "weighted interactions, all time"),
        *_many("recent_purchases", RECENT_ITEMS, Float32, 0.0, "purchases, all time"),
        *_many("recent_last_ts", RECENT_ITEMS, Float64, 0.0, "last interaction, Unix seconds"),
    ],
)

# A row when the item is created (code only), then at each weekly fit after new interactions.
item_cooccurrence = item_view(
    "item_cooccurrence",
    ttl=timedelta(days=3650),
    schema=[
        feature("item_code", Float64, default=-1.0, description="52-bit hash of item_id"),
        *_many("co_item", NEIGHBOURS, Float64, -1.0, "code of a co-occurring item"),
        *_many("co_score", NEIGHBOURS, Float32, 0.0, "its cosine co-occurrence"),
    ],
)

# Implicit ALS, refitted weekly on every earlier interaction: a row per fit.
user_mf = user_view(
    "user_mf",
    ttl=timedelta(days=365),
    schema=[
        feature("user_mf_fit", Float64, default=0.0, description="the fit's time, Unix seconds"),
        *_many("user_mf", FACTORS, Float32, 0.0, "user vector"),
        *_many("recent_mf", FACTORS, Float32, 0.0, "mean item vector of the recent items"),
    ],
)
item_mf = item_view(
    "item_mf",
    ttl=timedelta(days=365),
    schema=[
        feature("item_mf_fit", Float64, default=0.0, description="the fit's time, Unix seconds"),
        *_many("item_mf", FACTORS, Float32, 0.0, "item vector"),
    ],
)


_item_collaborative_features_schema, _item_collaborative_features_defaults = float_outputs(
    user_item_interactions=0.0,
    user_item_purchases=0.0,
    user_item_days_since=365.0,
    user_item_rank=float(RECENT_ITEMS),
    co_recent_sum=0.0,
    co_recent_max=0.0,
    co_last_sum=0.0,
    mf_score=0.0,
    mf_recent_similarity=0.0,
)


@on_demand_feature_view(
    sources=[user_recent, user_mf, item_cooccurrence, item_mf, request_context],
    schema=_item_collaborative_features_schema,
    mode="pandas",
    tags=array_inputs() | _item_collaborative_features_defaults,
)
def item_collaborative_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # The candidate against the user's history. Missing (NaN: the default and indicator apply)
    # when the user has no history row or the candidate no code; 0 when they share nothing.
    # - user_item_*: the candidate among the user's recent items: weighted interactions,
    #   purchases, days since the last one, its position (0: the most recent item); days and
    #   position are missing when it is not there.
    # - co_recent_sum / _max: the candidate's co-occurrence with each recent item (from the
    #   candidate's neighbour list), summed / the largest; co_last_sum: over the items of the
    #   user's latest day.
    # - mf_score: user vector . item vector; mf_recent_similarity: cosine of the item vector
    #   and the mean vector of the user's recent items; missing unless both come from one fit.
    # Feast runs this from its source text: keep imports inside and call no module helpers.
    # A DataFrame in, a DataFrame out (Feast, training); float64 numpy columns in, float32
    # columns out (the gateway, `inputs: arrays`): the same arithmetic on the same block.
    import numpy as np
    import pandas as pd

    k, j, d = 50, 30, 32
    names = [
        "request_ts", "item_code", "user_mf_fit", "item_mf_fit",
        *(f"{p}_{n:02d}" for p in ("recent_item", "recent_count", "recent_purchases",
                                   "recent_last_ts") for n in range(k)),
        *(f"{p}_{n:02d}" for p in ("co_item", "co_score") for n in range(j)),
        *(f"{p}_{n:02d}" for p in ("user_mf", "recent_mf", "item_mf") for n in range(d)),
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
    ts, code, user_fit, item_fit = x[:, :4].T
    at = 4
    recent, counts, bought, last_ts = (x[:, at + k * n : at + k * (n + 1)] for n in range(4))
    at += 4 * k
    co_item, co_score = x[:, at : at + j], np.nan_to_num(x[:, at + j : at + 2 * j])
    at += 2 * j
    user_vec, recent_vec, item_vec = (x[:, at + d * n : at + d * (n + 1)] for n in range(3))

    known = (recent[:, 0] == recent[:, 0]) & (code == code)
    match = recent == code[:, None]  # NaN (an empty slot) matches nothing
    hit = known & match.any(axis=1)
    first = np.argmax(match, axis=1)  # the most recent match
    index = np.arange(rows)
    # Co-occurrence score of each recent item with the candidate, [rows, k], in row blocks.
    per_recent = np.zeros((rows, k))
    for lo in range(0, rows, 2048):
        block = co_item[lo : lo + 2048, :, None] == recent[lo : lo + 2048, None, :]
        per_recent[lo : lo + 2048] = np.einsum("rj,rjk->rk", co_score[lo : lo + 2048], block)
    latest_ts = np.max(np.where(last_ts == last_ts, last_ts, -np.inf), axis=1)
    latest = last_ts == latest_ts[:, None]
    same_fit = (user_fit == item_fit) & (user_fit == user_fit)
    norms = np.sqrt((recent_vec * recent_vec).sum(axis=1) * (item_vec * item_vec).sum(axis=1))
    nan = np.nan
    out = {
        "user_item_interactions": np.where(known, np.where(match, counts, 0.0).sum(axis=1), nan),
        "user_item_purchases": np.where(known, np.where(match, bought, 0.0).sum(axis=1), nan),
        "user_item_days_since": np.where(hit, (ts - last_ts[index, first]) / 86400.0, nan),
        "user_item_rank": np.where(hit, first, nan),
        "co_recent_sum": np.where(known, per_recent.sum(axis=1), nan),
        "co_recent_max": np.where(known, per_recent.max(axis=1, initial=0.0), nan),
        "co_last_sum": np.where(known, (per_recent * latest).sum(axis=1), nan),
        "mf_score": np.where(same_fit, (user_vec * item_vec).sum(axis=1), nan),
        "mf_recent_similarity": np.where(
            same_fit & (norms > 0),
            (recent_vec * item_vec).sum(axis=1) / np.where(norms > 0, norms, 1.0),
            nan,
        ),
    }
    columns = {name: v.astype("float32") for name, v in out.items()}
    if isinstance(inputs, pd.DataFrame):
        return pd.DataFrame(columns, index=inputs.index)
    return columns
