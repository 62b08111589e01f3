"""Implicit-feedback training examples: a log's positive events and sampled negatives.

A shop's log rarely has impressions; it has purchases, add-to-carts, clicks and views. Each
positive *episode* (a user's consecutive events on one item, e.g. view -> add_to_cart ->
purchase, as scoring.evaluation's leave-one-out defines it) is one example at the time of its
first event, labelled 1 (`clicked`; `purchased` when the episode holds a purchase), with the
largest weight of its events as its sample weight (ImplicitFeedbackSettings.positive_events:
purchase 1.0, add_to_cart 0.7, click 0.5, view 0.3 by default).

Each positive gets `negatives` sampled items at its own timestamp, labelled 0, weighted like
their positive (so every positive and its negatives weigh what the event is worth):
`round(negatives * popularity_share)` of them drawn in proportion to the items' weighted
interactions before the positive's day (hard negatives: a model cannot win by popularity
alone), the rest uniformly over the items with an interaction before the positive (what a
catalogue-wide ranking meets). The default share is 0, all uniform: popularity-drawn negatives
teach the model to rank popular items down (on Ta-Feng, HR@10 fell from 0.670 to 0.570).
A draw is rejected and redrawn (up to `_ROUNDS` times) when the user had interacted with the
item (any positive event type, whatever its weight) at or before that time, so a negative is
never an item the user had already touched, nor the positive.

When there are more examples than `max_rows`, a seeded uniform sample of the positive episodes
is kept (with their negatives): every user is represented in proportion to their activity
(keeping whole users instead spent the budget on a few heavy ones: 2,843 of Ta-Feng's 32,266
users, and the model ranked worse). The features need no complete history: they are read from
the feature tables, built from the whole log.

Every example then gets its features as of its own timestamp through the target's
FeatureService, like an impression (scoring.trainer.train).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from scoring.core.settings import ImplicitFeedbackSettings
from scoring.evaluation.basket_protocol import basket_holdout_ends
from scoring.evaluation.interactions import (
    EVENTS_FILE,
    EventLogMissingError,
    PositiveEvents,
    load_interactions,
)
from scoring.evaluation.protocol import EvalProtocol, build_tasks, timestamps_ns

DAY = 86_400
KIND = "example_kind"  # positive, popularity or uniform (not a model input)
WEIGHT = "weight"
POSITIVE, POPULAR, UNIFORM = "positive", "popularity", "uniform"
_ROUNDS = 10
Holdout = Literal["none", "loo", "time", "basket"]
HOLDOUTS: tuple[Holdout, ...] = ("none", "loo", "time", "basket")


class TrainingDataError(ValueError):
    """Nothing (or not enough) to train on: the message names what is missing."""


@dataclass(frozen=True, slots=True)
class Examples:
    """Implicit examples and how they were made (recorded in the manifest).

    Attributes:
        rows: user_id, item_id, event_timestamp (UTC), request_ts (Unix s), clicked,
            purchased, weight, example_kind; in time order.
        stats: counts of positives, negatives by kind, users kept, rows dropped.
    """

    rows: pd.DataFrame
    stats: dict[str, int | float | str] = field(default_factory=dict)


def positive_events(settings: ImplicitFeedbackSettings) -> PositiveEvents:
    """The settings' event weights as PositiveEvents; unknown event types are refused."""
    known = set(PositiveEvents.__dataclass_fields__)
    unknown = sorted(set(settings.positive_events) - known)
    if unknown:
        raise TrainingDataError(
            f"positive_events: unknown event type(s) {unknown}; known: {sorted(known)}"
        )
    weights = {name: 0.0 for name in known} | settings.positive_events
    try:
        return PositiveEvents(**weights)
    except ValueError as exc:
        raise TrainingDataError(str(exc)) from None


def holdout_ends(interactions: pd.DataFrame, holdout: Holdout) -> pd.Series | None:
    """Per user, the time from which `scoring evaluate`'s protocol holds their interactions
    out (None: no holdout). Training must not see anything at or after it."""
    if holdout == "none":
        return None
    if holdout == "basket":
        try:
            return basket_holdout_ends(interactions)
        except ValueError as exc:
            raise TrainingDataError(f"holdout basket: {exc}") from None
    try:
        tasks = build_tasks(interactions, EvalProtocol(holdout, negatives=1, max_users=None))
    except ValueError as exc:
        raise TrainingDataError(f"holdout {holdout}: {exc}") from None
    if holdout == "time":
        assert tasks.cut is not None
        users = interactions["user_id"].cat.categories
        return pd.Series(tasks.cut, index=pd.Index(users.astype(str)))
    return pd.Series(
        tasks.heldout["timestamp"].to_numpy(),
        index=pd.Index(tasks.heldout["user_id"].astype(str).to_numpy()),
    )


def before_holdout(users: pd.Series, times: pd.Series, ends: pd.Series | None) -> np.ndarray:
    """Which rows (user, time) fall before their user's holdout time (all when None)."""
    if ends is None:
        return np.ones(len(users), dtype=bool)
    end = ends.reindex(users.astype(str).to_numpy()).to_numpy()
    t = pd.to_datetime(times, utc=True).to_numpy()
    return np.asarray(pd.isna(end) | (t < end))


def _episodes(
    user: np.ndarray, item: np.ndarray, weight: np.ndarray, purchase: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per episode (a user's run of consecutive events on one item, log order): its first
    row, its largest weight, whether it holds a purchase."""
    order = np.argsort(user, kind="stable")
    u, i = user[order], item[order]
    start = np.ones(len(u), dtype=bool)
    start[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    run = np.cumsum(start) - 1
    first = order[start]
    best = np.zeros(int(run[-1]) + 1 if len(run) else 0)
    np.maximum.at(best, run, weight[order])
    bought = np.zeros(len(best), dtype=bool)
    np.logical_or.at(bought, run, purchase[order])
    return first, best, bought


def _keep_episodes(n: int, budget: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of `budget` of `n` positive episodes (all when they fit)."""
    keep = np.zeros(n, dtype=bool)
    if n <= budget:
        keep[:] = True
    else:
        keep[np.random.default_rng([seed, n]).choice(n, max(budget, 1), replace=False)] = True
    return keep


class _Seen:
    """When each (user, item) pair was first interacted with: the negatives' exclusion."""

    def __init__(self, user: np.ndarray, item: np.ndarray, t: np.ndarray, n_items: int):
        keys = user.astype(np.int64) * n_items + item
        order = np.lexsort((t, keys))
        keys, t = keys[order], t[order]
        first = np.r_[True, keys[1:] != keys[:-1]]
        self.keys, self.first_t, self.n_items = keys[first], t[first], n_items

    def touched(self, user: np.ndarray, item: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Whether the user had interacted with the item at or before t."""
        keys = user.astype(np.int64) * self.n_items + item
        pos = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.zeros(len(keys), dtype=bool)
        return np.asarray((self.keys[pos] == keys) & (self.first_t[pos] <= t))


def _draw_uniform(
    rng: np.random.Generator, by_first: np.ndarray, available: np.ndarray
) -> np.ndarray:
    """One item per row, uniform over the `available[row]` earliest items (-1: none)."""
    idx = np.floor(rng.random(len(available)) * available).astype(np.int64)
    return np.where(available > 0, by_first[np.minimum(idx, len(by_first) - 1)], -1)


def _draw_popular(
    rng: np.random.Generator,
    day: np.ndarray,
    item: np.ndarray,
    t: np.ndarray,
    weight: np.ndarray,
    n_items: int,
) -> np.ndarray:
    """One item per row, in proportion to the items' weighted interactions before the row's
    day (-1 when there are none yet). `item`, `t`, `weight`: the interactions, time order."""
    out = np.full(len(day), -1, dtype=np.int64)
    counts = np.zeros(n_items)
    done = 0
    order = np.argsort(day, kind="stable")
    bounds = np.flatnonzero(np.r_[True, day[order][1:] != day[order][:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[lo:hi]
        upto = int(np.searchsorted(t, day[rows[0]] * DAY, side="left"))
        np.add.at(counts, item[done:upto], weight[done:upto])
        done = upto
        cdf = np.cumsum(counts)
        if cdf[-1] <= 0:
            continue
        pick = np.searchsorted(cdf, rng.random(len(rows)) * cdf[-1], side="right")
        out[rows] = np.minimum(pick, n_items - 1)
    return out


def draw_negatives(
    rng: np.random.Generator,
    interactions: tuple[np.ndarray, np.ndarray, np.ndarray, int],
    times: np.ndarray,
    mix: tuple[int, int],
    rejected: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """One negative item per slot, drawn as of the slot's time (`times`, Unix seconds).

    Args:
        interactions: item codes, times (s) and weights of the interactions, and the number
            of items: an item can be drawn once it has appeared, popular draws follow the
            weighted interactions of the day before.
        mix: (popular, per): the first `popular` of each run of `per` slots are popularity
            draws, the others uniform over the items seen so far.
        rejected: (slot rows, drawn items) -> True where a draw may not be the negative (e.g.
            the user touched it, or it is in the basket); those are redrawn, up to `_ROUNDS`
            times.

    Returns:
        the item per slot (-1: none found) and each slot's kind (POPULAR or UNIFORM).
    """
    i, t, w, n_items = interactions
    n_pop, per = mix
    first_t = np.full(n_items, np.iinfo(np.int64).max)
    np.minimum.at(first_t, i, t)
    by_first = np.argsort(first_t, kind="stable")
    kinds = np.tile(np.array([POPULAR] * n_pop + [UNIFORM] * (per - n_pop)), len(times) // per)
    popular = kinds == POPULAR
    available = np.searchsorted(first_t[by_first], times, side="left")
    negative = np.full(len(times), -1, dtype=np.int64)
    todo = np.arange(len(times))
    for _ in range(_ROUNDS):
        if not len(todo):
            break
        draw = _draw_uniform(rng, by_first, available[todo])
        pop_rows = popular[todo]
        if pop_rows.any():  # before the first day with interactions: uniform instead
            popular_draw = _draw_popular(rng, times[todo][pop_rows] // DAY, i, t, w, n_items)
            draw[pop_rows] = np.where(popular_draw >= 0, popular_draw, draw[pop_rows])
        safe = np.maximum(draw, 0)
        ok = (draw >= 0) & (first_t[safe] < times[todo]) & ~rejected(todo, safe)
        negative[todo[ok]] = draw[ok]
        todo = todo[~ok & (available[todo] > 0)]
    return negative, kinds


def implicit_examples(
    data_dir: Path, settings: ImplicitFeedbackSettings, holdout: Holdout = "none"
) -> Examples:
    """The implicit examples of `data_dir/events.parquet` (module docstring).

    Args:
        data_dir: the feature repo's data folder.
        settings: event weights, negatives, the popularity share, the row cap, the seed.
        holdout: leave out what `scoring evaluate --protocol loo|time` holds out.

    Raises:
        TrainingDataError: no event log, or no positive event in it.
    """
    weights = positive_events(settings)
    everything = PositiveEvents()  # any interaction excludes an item from the negatives
    try:
        inter = load_interactions(data_dir, everything)
    except EventLogMissingError as exc:
        raise TrainingDataError(str(exc)) from None
    ends = holdout_ends(inter, holdout)
    kind = inter["event_type"].astype(str).to_numpy()
    w = pd.Series(kind).map(weights.weights()).fillna(0.0).to_numpy(dtype=np.float64)
    users = inter["user_id"].cat.categories
    items = inter["item_id"].cat.categories
    u = inter["user_id"].cat.codes.to_numpy().astype(np.int64)
    i = inter["item_id"].cat.codes.to_numpy().astype(np.int64)
    t = timestamps_ns(inter["timestamp"]) // 1_000_000_000
    usable = (w > 0) & before_holdout(inter["user_id"], inter["timestamp"], ends)
    if not usable.any():
        raise TrainingDataError(
            f"{data_dir / EVENTS_FILE}: no positive event to learn from (positives: "
            f"{', '.join(weights.weights())}; the log has {', '.join(sorted(set(kind)))})"
        )
    rows = np.flatnonzero(usable)
    first, best, bought = _episodes(u[rows], i[rows], w[rows], kind[rows] == "purchase")
    pos = rows[first]
    pos = pos[np.argsort(pos, kind="stable")]  # time order
    episode_weight = pd.Series(best, index=rows[first]).reindex(pos).to_numpy()
    episode_bought = pd.Series(bought, index=rows[first]).reindex(pos).to_numpy()
    per_positive = 1 + settings.negatives
    kept = _keep_episodes(len(pos), settings.max_rows // per_positive, settings.seed)
    dropped_users = len(np.unique(u[pos])) - len(np.unique(u[pos][kept]))
    pos, episode_weight, episode_bought = pos[kept], episode_weight[kept], episode_bought[kept]

    rng = np.random.default_rng(settings.seed)
    n_pop = int(round(settings.negatives * settings.popularity_share))
    seen = _Seen(u, i, t, len(items))
    pu, pt = np.repeat(u[pos], settings.negatives), np.repeat(t[pos], settings.negatives)
    negative, kinds = draw_negatives(
        rng,
        (i, t, w, len(items)),
        pt,
        (n_pop, settings.negatives),
        lambda rows, draw: seen.touched(pu[rows], draw, pt[rows]),
    )
    got = negative >= 0
    popular = kinds == POPULAR
    neg_weight = np.repeat(episode_weight, settings.negatives)
    frame = pd.concat(
        [
            _rows(
                users, items, u[pos], i[pos], t[pos], 1, episode_bought, episode_weight, POSITIVE
            ),
            _rows(
                users,
                items,
                pu[got],
                negative[got],
                pt[got],
                0,
                np.zeros(int(got.sum()), dtype=bool),
                neg_weight[got],
                kinds[got],
            ),
        ],
        ignore_index=True,
    )
    frame = frame.sort_values("request_ts", kind="stable", ignore_index=True)
    stats: dict[str, int | float | str] = {
        "positives": len(pos),
        "negatives_popularity": int((got & popular).sum()),
        "negatives_uniform": int((got & ~popular).sum()),
        "negatives_not_found": int((~got).sum()),
        "users": len(np.unique(u[pos])),
        "users_left_out_by_max_rows": dropped_users,
        "holdout": holdout,
    }
    return Examples(frame, stats)


def _rows(
    users: pd.Index,
    items: pd.Index,
    u: np.ndarray,
    i: np.ndarray,
    t: np.ndarray,
    label: int,
    purchased: np.ndarray,
    weight: np.ndarray,
    kind: str | np.ndarray,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": users.to_numpy(dtype=object)[u],
            "item_id": items.to_numpy(dtype=object)[i],
            "event_timestamp": pd.to_datetime(t, unit="s", utc=True),
            "request_ts": t,
            "clicked": np.full(len(u), label, dtype=np.int64),
            "purchased": np.asarray(purchased, dtype=np.int64),
            WEIGHT: np.asarray(weight, dtype=np.float64),
            KIND: kind,
        }
    )


def labelled_impressions(path: Path) -> int:
    """How many labelled impressions a labels file holds (0 when absent)."""
    if not path.exists():
        return 0
    return int(pq.read_metadata(path).num_rows)


__all__ = [
    "HOLDOUTS",
    "KIND",
    "WEIGHT",
    "Examples",
    "Holdout",
    "TrainingDataError",
    "before_holdout",
    "holdout_ends",
    "implicit_examples",
    "labelled_impressions",
    "positive_events",
]
