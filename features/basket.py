"""Basket features: what is bought with an item, and what goes with its category.

Stored views (built by scoring.datagen.baskets, every row from baskets strictly before its
time; formulas in its docstring): an item's co-purchase neighbours by smoothed PMI
(`item_copurchase`) and the complementary categories of its category (`category_complements`).
The request source `cart_context` carries the cart: its first 20 items' codes and category
codes (-1: an empty slot or an unknown item) and its size. The request-time view
`basket_features` matches the candidate against the cart, through both its co-purchase
neighbours (by lift) and its cosine co-occurrence neighbours (`item_cooccurrence`, the
collaborative view); a basket model reads only its outputs. The gateway reads
`item_copurchase` for the cart items themselves (FeatureService `basket_cart_v1`): their codes
and categories for `cart_context`, their neighbours' ids (`cp_id_NN`, the only String
features) to propose candidates.

Items are matched by code (scoring.datagen.collaborative.item_codes), categories by the build's
vocabulary code.
"""

from datetime import timedelta
from functools import partial

import pandas as pd
from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import FeastType, Float32, Float64, String

from collaborative import item_cooccurrence
from defaults import array_inputs, feature, float_outputs, table_view
from entities import item

NEIGHBOURS = 30  # scoring.datagen.baskets.NEIGHBOURS
CO_NEIGHBOURS = 30  # scoring.datagen.collaborative.NEIGHBOURS (item_cooccurrence)
COMPLEMENTS = 20  # scoring.datagen.baskets.COMPLEMENTS
CART_SLOTS = 20  # scoring.core.targets.CART_SLOTS

item_view = partial(table_view, entity=item, owner="personalization")


def _many(prefix: str, n: int, dtype: FeastType, default: float, description: str) -> list[Field]:
    return [
        feature(f"{prefix}_{k:02d}", dtype, default=default, description=description)
        for k in range(n)
    ]


# A row when the item is created (code and category), then at each fit where its counts changed.
item_copurchase = item_view(
    "item_copurchase",
    ttl=timedelta(days=3650),
    schema=[
        feature("item_code", Float64, default=-1.0, description="52-bit hash of item_id"),
        feature("category_code", Float64, default=-1.0, description="category code, -1: none"),
        feature("basket_count", Float32, default=0.0, description="baskets with it, all time"),
        feature("basket_count_30d", Float32, default=0.0, description="baskets with it, 30 days"),
        *_many("cp_item", NEIGHBOURS, Float64, -1.0, "code of a co-purchased item, best first"),
        # Ids for the gateway's candidate proposals; not a model input (no default: not numeric).
        *(
            Field(name=f"cp_id_{k:02d}", dtype=String, description="its item_id")
            for k in range(NEIGHBOURS)
        ),
        *_many("cp_count", NEIGHBOURS, Float32, 0.0, "baskets with both, all time"),
        *_many("cp_count_30d", NEIGHBOURS, Float32, 0.0, "baskets with both, 30 days"),
        *_many("cp_pmi", NEIGHBOURS, Float32, 0.0, "their smoothed PMI"),
    ],
)

# A row when the item is created (nothing), then at each fit (every item of a seen category).
category_complements = item_view(
    "category_complements",
    ttl=timedelta(days=3650),
    schema=[
        *_many("cc_category", COMPLEMENTS, Float64, -1.0, "a complementary category, best first"),
        *_many("cc_lift", COMPLEMENTS, Float32, 0.0, "its smoothed log-lift with the item's"),
    ],
)

cart_context = RequestSource(
    name="cart_context",
    schema=[
        *(
            Field(name=f"cart_item_{k:02d}", dtype=Float64, description="cart item code, -1: none")
            for k in range(CART_SLOTS)
        ),
        *(
            Field(name=f"cart_category_{k:02d}", dtype=Float64, description="its category, -1")
            for k in range(CART_SLOTS)
        ),
        Field(name="cart_size", dtype=Float64, description="items in the cart"),
    ],
)

_basket_features_schema, _basket_features_defaults = float_outputs(
    in_cart=0.0,
    cart_size=0.0,
    cp_cart_hits=0.0,
    cp_cart_count_sum=0.0,
    cp_cart_count_max=0.0,
    cp_cart_count_30d_sum=0.0,
    cp_cart_pmi_sum=0.0,
    cp_cart_pmi_max=0.0,
    cp_cart_pmi_mean=0.0,
    cp_cart_hit_share=0.0,
    cp_cart_count_mean=0.0,
    co_cart_hits=0.0,
    co_cart_score_sum=0.0,
    co_cart_score_max=0.0,
    co_cart_score_mean=0.0,
    cc_cart_lift_max=0.0,
    cc_cart_lift_mean=0.0,
    cart_same_category_share=0.0,
    candidate_basket_count_log=0.0,
)


@on_demand_feature_view(
    sources=[
        item_copurchase[
            [
                "item_code",
                "category_code",
                "basket_count",
                *(
                    f"{p}_{k:02d}"
                    for p in ("cp_item", "cp_count", "cp_count_30d", "cp_pmi")
                    for k in range(NEIGHBOURS)
                ),
            ]
        ],
        category_complements,
        item_cooccurrence[
            [*(f"{p}_{k:02d}" for p in ("co_item", "co_score") for k in range(CO_NEIGHBOURS))]
        ],
        cart_context,
    ],
    schema=_basket_features_schema,
    mode="pandas",
    tags=array_inputs() | _basket_features_defaults,
)
def basket_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # The candidate against the cart. The cart's known items are its slots with an item code
    # (>= 0), its known categories those with a category code (>= 0).
    # - in_cart: the candidate is in the cart; cart_size: the request's (or the known items).
    # - cp_cart_*: the cart items among the candidate's co-purchase neighbours: how many
    #   (hits), their pair baskets (all time: sum, max; 30 days: sum), their smoothed PMI (sum,
    #   max over the hits, mean over the cart's known items, a cart item that is no neighbour
    #   counting 0); the share of the cart's known items that are hits and their mean pair
    #   baskets (count sum / known items): a large cart meets more neighbours by chance.
    # - co_cart_*: the same against the candidate's cosine co-occurrence neighbours
    #   (item_cooccurrence: ranked by cosine, not by lift, so a list that holds the items bought
    #   most often with it rather than those bought with it beyond their popularity; for a
    #   large cart the two lists meet different cart items): how many of the cart's items,
    #   their cosine summed, the largest, the mean over the cart's known items.
    # - cc_cart_lift_max / _mean: the log-lift of each known cart category with the
    #   candidate's (0 when it is not among the candidate category's complements, e.g. the same
    #   category), the largest / the mean over the known categories.
    # - cart_same_category_share: the known cart categories equal to the candidate's.
    # - candidate_basket_count_log: log(1 + baskets holding the candidate).
    # Missing (NaN: the default and indicator apply) when the candidate has no item_copurchase
    # row; the category features also when its category is unknown. An empty cart gives 0.
    # Feast runs this from its source text: keep imports inside and call no module helpers.
    # A DataFrame in, a DataFrame out (Feast, training); float64 numpy columns in, float32
    # columns out (the gateway, `inputs: arrays`): the same arithmetic on the same block.
    import numpy as np
    import pandas as pd

    j, m, c, o = 30, 20, 20, 30
    names = [
        "item_code", "category_code", "basket_count", "cart_size",
        *(f"{p}_{n:02d}" for p in ("cp_item", "cp_count", "cp_count_30d", "cp_pmi")
          for n in range(j)),
        *(f"{p}_{n:02d}" for p in ("cc_category", "cc_lift") for n in range(m)),
        *(f"{p}_{n:02d}" for p in ("co_item", "co_score") for n in range(o)),
        *(f"{p}_{n:02d}" for p in ("cart_item", "cart_category") for n in range(c)),
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
    code, category, baskets, size = x[:, :4].T
    at = 4
    nbr, count, count_30d, pmi = (x[:, at + j * n : at + j * (n + 1)] for n in range(4))
    at += 4 * j
    cc_category, cc_lift = x[:, at : at + m], x[:, at + m : at + 2 * m]
    at += 2 * m
    co_item, co_score = x[:, at : at + o], x[:, at + o : at + 2 * o]
    at += 2 * o
    cart, cart_category = x[:, at : at + c], x[:, at + c : at + 2 * c]

    known = code == code
    has_category = known & (category >= 0)
    items = cart >= 0  # NaN (no value) is no item
    categories = cart_category >= 0
    n_items, n_categories = items.sum(axis=1), categories.sum(axis=1)
    cart_items = np.where(items, cart, -2.0)  # never a code, never NaN
    cart_categories = np.where(categories, cart_category, -2.0)
    # Which neighbours ([rows, j]) are in the cart; each known cart category's lift ([rows, c]).
    hit = np.zeros((rows, j), dtype=bool)
    co_hit = np.zeros((rows, o), dtype=bool)
    lift = np.zeros((rows, c))
    for lo in range(0, rows, 2048):
        hi = lo + 2048
        hit[lo:hi] = (nbr[lo:hi, :, None] == cart_items[lo:hi, None, :]).any(axis=2)
        co_hit[lo:hi] = (co_item[lo:hi, :, None] == cart_items[lo:hi, None, :]).any(axis=2)
        same = cc_category[lo:hi, :, None] == cart_categories[lo:hi, None, :]
        lift[lo:hi] = np.einsum("ra,rab->rb", np.nan_to_num(cc_lift[lo:hi]), same)
    hits = hit.sum(axis=1)
    counts = np.where(hit, count, 0.0)
    pmis = np.where(hit, pmi, 0.0)
    pmi_sum = pmis.sum(axis=1)
    top_pmi = np.where(hit, pmi, -np.inf).max(axis=1, initial=-np.inf)
    top_lift = np.where(categories, lift, -np.inf).max(axis=1, initial=-np.inf)
    in_category = (cart_categories == category[:, None]).sum(axis=1)
    per_item = np.maximum(n_items, 1)
    co_scores = np.where(co_hit, np.nan_to_num(co_score), 0.0)
    co_sum = co_scores.sum(axis=1)
    nan = np.nan
    out = {
        "in_cart": np.where(known, (cart_items == code[:, None]).any(axis=1), nan),
        "cart_size": np.where(size == size, size, n_items),
        "cp_cart_hits": np.where(known, hits, nan),
        "cp_cart_count_sum": np.where(known, counts.sum(axis=1), nan),
        "cp_cart_count_max": np.where(known, counts.max(axis=1, initial=0.0), nan),
        "cp_cart_count_30d_sum": np.where(known, np.where(hit, count_30d, 0.0).sum(axis=1), nan),
        "cp_cart_pmi_sum": np.where(known, pmi_sum, nan),
        "cp_cart_pmi_max": np.where(known, np.where(hits > 0, top_pmi, 0.0), nan),
        "cp_cart_pmi_mean": np.where(known, pmi_sum / per_item, nan),
        "cp_cart_hit_share": np.where(known, hits / per_item, nan),
        "cp_cart_count_mean": np.where(known, counts.sum(axis=1) / per_item, nan),
        "co_cart_hits": np.where(known, co_hit.sum(axis=1), nan),
        "co_cart_score_sum": np.where(known, co_sum, nan),
        "co_cart_score_max": np.where(known, co_scores.max(axis=1, initial=0.0), nan),
        "co_cart_score_mean": np.where(known, co_sum / per_item, nan),
        "cc_cart_lift_max": np.where(has_category, np.where(n_categories > 0, top_lift, 0.0), nan),
        "cc_cart_lift_mean": np.where(
            has_category, lift.sum(axis=1) / np.maximum(n_categories, 1), nan
        ),
        "cart_same_category_share": np.where(
            has_category, in_category / np.maximum(n_categories, 1), nan
        ),
        "candidate_basket_count_log": np.log1p(np.maximum(baskets, 0.0)),
    }
    columns = {name: v.astype("float32") for name, v in out.items()}
    if isinstance(inputs, pd.DataFrame):
        return pd.DataFrame(columns, index=inputs.index)
    return columns
