"""Basket training examples: one item of each basket held out, the rest its cart.

A target with a cart feature service (core.targets: `basket_completer`) learns which item
completes a cart. Its examples come from the log's baskets (scoring.evaluation.basket_protocol:
purchases grouped by `order_id`, else a user's purchases of one UTC day) of 2 or more distinct
items: one item, drawn with a generator seeded by `BasketExamplesSettings.seed`, is the
positive (`clicked` 1) and the others are the cart, in the cart request fields the gateway
sends (the first CART_SLOTS items' codes and category codes, and the cart's size). Every row
sits at the basket's time (its first purchase), so the features are read as they were before
the basket.

Each positive gets `negatives` sampled items with the same user, time and cart (`clicked` 0):
`round(negatives * popularity_share)` of them drawn in proportion to the items' weighted
interactions before the basket's day (popular items that do not go with the cart: a model
cannot win by popularity alone), the rest uniformly over the items with an interaction before
the basket. A draw is redrawn (up to `_ROUNDS` times) when it is an item of the basket. An item
the user interacted with at another time may be a negative, as in `scoring evaluate --protocol
basket`: the question is which item completes this cart, and only the basket's items do.

With more usable baskets than `max_baskets`, a seeded uniform sample of them is kept. `holdout`
leaves out what `scoring evaluate` holds out, like the implicit examples; `--holdout basket`
leaves out each user's test basket of `scoring evaluate --protocol basket` and everything of
that user from its time on.

On a synthetic log (the build wrote data/item_oracle.parquet), every row also gets `p_click`,
the generator's planted probability of the item being added to that cart: the oracle the
training report compares the model with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scoring.core.settings import BasketExamplesSettings
from scoring.evaluation.basket_protocol import (
    basket_oracle,
    cart_fields,
    find_baskets,
    hold_out,
    item_categories,
)
from scoring.evaluation.interactions import (
    EventLogMissingError,
    PositiveEvents,
    load_interactions,
)
from scoring.evaluation.protocol import timestamps_ns
from scoring.trainer.implicit import (
    KIND,
    POPULAR,
    POSITIVE,
    WEIGHT,
    Examples,
    Holdout,
    TrainingDataError,
    draw_negatives,
    holdout_ends,
)

ORACLE = "p_click"  # scoring.trainer.examples.ORACLE: the column the report's oracle reads
NO_BASKETS = (
    "no basket of 2 or more distinct purchased items (baskets: purchases grouped by order_id, "
    "else a user's purchases of one UTC day)"
)


def _in_baskets(
    baskets_items: np.ndarray, offsets: np.ndarray, rows: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """Whether draws[j] is an item of basket rows[j] (`baskets_items[offsets[b]:offsets[b+1]]`)."""
    lo, hi = offsets[rows], offsets[rows + 1]
    out = np.zeros(len(rows), dtype=bool)
    for k in range(int((hi - lo).max()) if len(rows) else 0):
        at = lo + k
        inside = at < hi
        out |= inside & (baskets_items[np.where(inside, at, 0)] == draws)
    return out


def basket_examples(
    data_dir: Path, settings: BasketExamplesSettings, holdout: Holdout = "none"
) -> Examples:
    """The basket examples of `data_dir/events.parquet` (module docstring).

    Returns:
        Examples whose rows hold user_id, item_id, event_timestamp (UTC), request_ts (Unix s),
        clicked, weight, example_kind, the cart fields, and p_click on a synthetic log.

    Raises:
        TrainingDataError: no event log, or no usable basket in it.
    """
    try:
        inter = load_interactions(data_dir, PositiveEvents())
    except EventLogMissingError as exc:
        raise TrainingDataError(str(exc)) from None
    ends = holdout_ends(inter, holdout)
    users = inter["user_id"].cat.categories
    items = inter["item_id"].cat.categories
    u = inter["user_id"].cat.codes.to_numpy().astype(np.int64)
    i = inter["item_id"].cat.codes.to_numpy().astype(np.int64)
    ns = timestamps_ns(inter["timestamp"])
    t = ns // 1_000_000_000
    w = inter["weight"].to_numpy(dtype=np.float64)
    baskets = find_baskets(inter, u, i, ns)
    usable = baskets.sizes >= 2
    n_baskets = int(usable.sum())
    if ends is not None:
        end = pd.DatetimeIndex(pd.to_datetime(ends.reindex(users.astype(str)).array, utc=True))
        end_ns = np.where(end.isna(), np.iinfo(np.int64).max, end.as_unit("ns").asi8)
        usable &= baskets.time < end_ns[baskets.user]
    chosen = np.flatnonzero(usable)
    if not len(chosen):
        why = NO_BASKETS if not n_baskets else f"every basket is held out (holdout {holdout})"
        raise TrainingDataError(f"{data_dir / 'events.parquet'}: {why}")
    if len(chosen) > settings.max_baskets:
        rng = np.random.default_rng([settings.seed, len(chosen)])
        chosen = np.sort(rng.choice(chosen, settings.max_baskets, replace=False))
    rng = np.random.default_rng(settings.seed)
    held, cart, size = hold_out(baskets, chosen, rng)
    bu, bt = baskets.user[chosen], baskets.time[chosen] // 1_000_000_000

    k = settings.negatives
    n_pop = int(round(k * settings.popularity_share))
    owner = np.repeat(np.arange(len(chosen)), k)
    negative, kinds = draw_negatives(
        rng,
        (i, t, w, len(items)),
        bt[owner],
        (n_pop, k),
        lambda rows, draw: _in_baskets(baskets.items, baskets.offsets, chosen[owner[rows]], draw),
    )
    got = negative >= 0
    popular = kinds == POPULAR

    item_ids = items.to_numpy(dtype=object).astype(str)
    names = np.append(item_ids, "")
    cart_ids = names[np.where(cart >= 0, cart, len(item_ids))]
    row_basket = np.concatenate([np.arange(len(chosen)), owner[got]])
    row_item = np.concatenate([held, negative[got]])
    label = np.concatenate([np.ones(len(chosen), np.int64), np.zeros(int(got.sum()), np.int64)])
    kind = np.concatenate([np.full(len(chosen), POSITIVE, dtype=object), kinds[got]])
    seconds = bt[row_basket]
    frame = pd.DataFrame(
        {
            "user_id": users.to_numpy(dtype=object).astype(str)[bu[row_basket]],
            "item_id": item_ids[row_item],
            "event_timestamp": pd.to_datetime(seconds, unit="s", utc=True),
            "request_ts": seconds,
            "clicked": label,
            WEIGHT: np.ones(len(row_item)),
            KIND: kind,
        }
    )
    fields = cart_fields(cart_ids[row_basket], size[row_basket], item_categories(data_dir))
    frame = pd.concat([frame, pd.DataFrame(fields)], axis=1)
    oracle = basket_oracle(data_dir)
    if oracle is not None:
        logit = oracle(cart_ids[row_basket], item_ids[row_item])
        frame[ORACLE] = 1.0 / (1.0 + np.exp(-logit))
    frame = frame.sort_values("request_ts", kind="stable", ignore_index=True)
    stats: dict[str, int | float | str] = {
        "baskets": n_baskets,
        "baskets_usable": int(usable.sum()),
        "baskets_kept": len(chosen),
        "positives": len(chosen),
        "negatives_popularity": int((got & popular).sum()),
        "negatives_uniform": int((got & ~popular).sum()),
        "negatives_not_found": int((~got).sum()),
        "mean_cart_size": float(size.mean()),
        "users": len(np.unique(bu)),
        "holdout": holdout,
    }
    return Examples(frame, stats)


__all__ = ["NO_BASKETS", "basket_examples"]
