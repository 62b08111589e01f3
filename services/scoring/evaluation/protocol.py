"""Evaluation protocols: which interaction each user holds out, what trains, and the negatives.

Two standard protocols (as in the NCF and SASRec papers):

- `loo` (leave-one-out): each user's last positive interaction is held out. Consecutive
  interactions of a user with the same item (view -> add_to_cart -> purchase) are one episode,
  and the whole last episode is held out, at the time of its first event: otherwise the view
  left in training would give the answer away. Ties between equal timestamps are broken by log
  order. `train` is every interaction except, for each user with a held-out episode (whether
  or not `max_users` samples them for scoring), those at or after the held-out time (the
  episode, and what shares its timestamp, e.g. the rest of a day-level basket). Other users'
  later interactions stay in `train`, as in the papers.
- `time` (global time split): the cut is the time before which `1 - test_fraction` of the
  interactions fall; `train` is everything before the cut, and each user's held-out
  interaction is their first positive at or after the cut (one per user, log order).

A third, `basket` (complete the basket: an item of a basket held out, the rest its cart), splits
by time over baskets; scoring.evaluation.basket_protocol builds its tasks.

Evaluated users need at least one training interaction before their held-out time (so a user
with fewer than two positives is skipped under `loo`, and a user first seen after the cut under
`time`). Items that never occur in `train` can still be held out: they are ranked (cold).

Negatives: K items drawn uniformly without replacement from the training catalogue (items in
`train`), leaving out every item the user interacted with anywhere in the log: before the
held-out time, and also at or after it (the rest of a same-day basket, or the user's later
positives under `time`), which are positives too and must not count as wrong answers. A user
with fewer than K such items is skipped. Users (when there are more
than `max_users`) and negatives come from numpy generators seeded by `seed`, in the sorted order
of user and item ids: the same log and protocol give the same candidates, so two model versions
are compared on the same negatives (`EvalTasks.digest` checks it).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from scoring.evaluation.interactions import PositiveEvents, sorted_categorical

Kind = Literal["loo", "time", "basket"]
KINDS: tuple[Kind, ...] = ("loo", "time", "basket")
_SAMPLE_CHUNK = 20_000  # users whose negatives are drawn at once


@dataclass(frozen=True, slots=True)
class EvalProtocol:
    """How an offline evaluation splits the log and samples negatives (module docstring).

    Attributes:
        kind: "loo" (leave-one-out per user), "time" (global time split) or "basket" (an
            item of each user's last basket, the rest its cart:
            scoring.evaluation.basket_protocol builds those tasks).
        negatives: K sampled negatives ranked with each held-out item.
        seed: seeds the user sample and the negatives.
        max_users: evaluate at most this many users (a seeded sample); None: all of them.
        test_fraction: the share of interactions ("time") or of baskets ("basket") after the
            cut.
        full_catalogue: also rank each held-out item among all the catalogue's items.
        positives: the event types that count as interactions, and their weights.
    """

    kind: Kind = "loo"
    negatives: int = 100
    seed: int = 0
    max_users: int | None = 5000
    test_fraction: float = 0.2
    full_catalogue: bool = False
    positives: PositiveEvents = field(default_factory=PositiveEvents)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"protocol kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.negatives < 1:
            raise ValueError(f"negatives must be at least 1, got {self.negatives}")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(
                f"max_users must be at least 1 (or None for all), got {self.max_users}"
            )
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    def describe(self) -> dict[str, Any]:
        """The protocol as plain JSON values (for reports and manifests)."""
        out = asdict(self)
        out["positives"] = self.positives.weights()
        if self.kind not in ("time", "basket"):
            del out["test_fraction"]
        return out


@dataclass(frozen=True)
class EvalTasks:
    """What every method is asked to rank, and what it may learn from.

    Attributes:
        protocol: the protocol that built these tasks.
        train: interactions a method may fit on (columns as `load_interactions`).
        heldout: one row per evaluated user: user_id, item_id (categoricals over `users` and
            `items`) and timestamp (the time as of which features must be read).
        candidate_codes: [users, 1 + K] item codes (into `items`), the held-out item first.
        users: every user id of the log (sorted); codes index it.
        items: every item id of the log (sorted); codes index it.
        catalogue: codes of the items in `train` (sorted): the negatives' pool.
        seen_keys: sorted `row * len(items) + item` codes of every item each evaluated user
            (row of `heldout`) interacted with in the log: never a negative.
        skipped: users left out, by reason.
        cut: the time split's cut (None for leave-one-out).
    """

    protocol: EvalProtocol
    train: pd.DataFrame
    heldout: pd.DataFrame
    candidate_codes: np.ndarray
    users: pd.Index
    items: pd.Index
    catalogue: np.ndarray
    seen_keys: np.ndarray
    skipped: dict[str, int]
    cut: pd.Timestamp | None = None

    @property
    def n_users(self) -> int:
        return len(self.heldout)

    @property
    def candidates(self) -> np.ndarray:
        """[users, 1 + K] item ids, the held-out item first."""
        return np.asarray(self.items.to_numpy(dtype=object)[self.candidate_codes])

    def digest(self) -> str:
        """sha256 of the evaluated users and their candidate ids: equal digests, equal tasks."""
        h = hashlib.sha256()
        ids = self.items.to_numpy(dtype=object)
        users = self.heldout["user_id"].astype(str).to_numpy()
        for start in range(0, self.n_users, 10_000):
            rows = self.candidate_codes[start : start + 10_000]
            for user, row in zip(users[start : start + 10_000], ids[rows], strict=True):
                h.update(("\t".join([user, *row]) + "\n").encode())
        return h.hexdigest()

    def frame(self, rows: np.ndarray, item_codes: np.ndarray) -> pd.DataFrame:
        """A scorer's input: held-out row `rows[j]`'s user and time with item `item_codes[j]`."""
        held = self.heldout
        return pd.DataFrame(
            {
                "user_id": pd.Categorical.from_codes(
                    held["user_id"].cat.codes.to_numpy()[rows], dtype=held["user_id"].dtype
                ),
                "item_id": pd.Categorical.from_codes(item_codes, dtype=held["item_id"].dtype),
                "timestamp": held["timestamp"].array.take(rows),
            }
        )


def timestamps_ns(values: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch (naive times are taken as UTC)."""
    return np.asarray(pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8)


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    cat = sorted_categorical(values)
    return cat.cat.codes.to_numpy().astype(np.int64), cat.cat.categories


def build_tasks(interactions: pd.DataFrame, protocol: EvalProtocol) -> EvalTasks:
    """Splits `interactions` (as `load_interactions` returns them, in log order) by `protocol`.

    Raises:
        ValueError: no user can be evaluated (the message says why), or the protocol is the
            basket one (scoring.evaluation.basket_protocol.build_basket_tasks).
    """
    if protocol.kind == "basket":
        raise ValueError("basket tasks come from basket_protocol.build_basket_tasks")
    users_c, users = _codes(interactions["user_id"])
    items_c, items = _codes(interactions["item_id"])
    times = timestamps_ns(interactions["timestamp"])
    if len(times) > 1 and bool((np.diff(times) < 0).any()):
        raise ValueError("interactions must be in time order (as load_interactions returns them)")
    skipped: dict[str, int] = {}
    cut: pd.Timestamp | None = None
    if protocol.kind == "loo":
        held_user, held_item, held_time = _last_episodes(users_c, items_c)
        held_time = times[held_time]
        before = _first_time(users_c, times, len(users))
        eligible = before[held_user] < held_time
        skipped["fewer than 2 positives at different times"] = len(users) - int(eligible.sum())
        held_user, held_item, held_time = (
            held_user[eligible],
            held_item[eligible],
            held_time[eligible],
        )
        end = np.full(len(users), np.iinfo(np.int64).max)
        end[held_user] = held_time
        train_mask = times < end[users_c]
    else:
        cut_ns = int(
            np.sort(times)[min(int(len(times) * (1 - protocol.test_fraction)), len(times) - 1)]
        )
        train_mask = times < cut_ns
        if not train_mask.any() or train_mask.all():
            raise ValueError(
                "time split: every interaction falls on the same side of the cut "
                f"({pd.Timestamp(cut_ns, tz='UTC')}); the log needs interactions at more times"
            )
        cut = pd.Timestamp(cut_ns, tz="UTC")
        after = np.flatnonzero(~train_mask)
        first = np.unique(users_c[after], return_index=True)[1]
        rows = after[first]
        has_train = np.zeros(len(users), dtype=bool)
        has_train[users_c[train_mask]] = True
        eligible = has_train[users_c[rows]]
        skipped["no interaction before the cut"] = int((~eligible).sum())
        rows = rows[eligible]
        held_user, held_item, held_time = users_c[rows], items_c[rows], times[rows]
    if len(held_user) == 0:
        raise ValueError(f"{protocol.kind}: no user can be evaluated ({_reasons(skipped)})")

    train = interactions[train_mask].reset_index(drop=True)
    catalogue = training_catalogue(items_c[train_mask], protocol)
    # Seeded user sample (in user-id order), then the negatives of the users kept.
    pick = seeded_sample(len(held_user), protocol, skipped)
    if pick is not None:
        held_user, held_item, held_time = held_user[pick], held_item[pick], held_time[pick]
    seen = _seen_keys(users_c, items_c, held_user, len(users), len(items))
    negatives, ok = _sample_negatives(
        np.random.default_rng([protocol.seed, 1]),
        catalogue,
        seen,
        held_item,
        len(items),
        protocol.negatives,
    )
    if not ok.all():
        skipped[f"fewer than {protocol.negatives} unseen catalogue items"] = int((~ok).sum())
        if not ok.any():
            raise ValueError(f"{protocol.kind}: no user can be evaluated ({_reasons(skipped)})")
        held_user, held_item, held_time = held_user[ok], held_item[ok], held_time[ok]
        negatives = negatives[ok]
        seen = _seen_keys(users_c, items_c, held_user, len(users), len(items))
    heldout = pd.DataFrame(
        {
            "user_id": pd.Categorical.from_codes(held_user, categories=users),
            "item_id": pd.Categorical.from_codes(held_item, categories=items),
            "timestamp": pd.to_datetime(held_time, utc=True),
        }
    )
    candidates = np.concatenate([held_item[:, None], negatives], axis=1).astype(np.int32)
    return EvalTasks(
        protocol,
        train,
        heldout,
        candidates,
        users,
        items,
        catalogue.astype(np.int32),
        seen,
        {k: v for k, v in skipped.items() if v},
        cut,
    )


def training_catalogue(train_items: np.ndarray, protocol: EvalProtocol) -> np.ndarray:
    """The distinct item codes of the training interactions; raises ValueError when they are
    too few to draw the protocol's negatives from."""
    catalogue = np.unique(train_items)
    if len(catalogue) < protocol.negatives + 1:
        raise ValueError(
            f"the training catalogue has {len(catalogue)} items: {protocol.negatives} negatives "
            f"need at least {protocol.negatives + 1} (use fewer negatives)"
        )
    return catalogue


def seeded_sample(n: int, protocol: EvalProtocol, skipped: dict[str, int]) -> np.ndarray | None:
    """The sorted positions of the seeded sample of `protocol.max_users` out of `n` tasks (the
    rest counted in `skipped`), or None when every task is kept."""
    if protocol.max_users is None or n <= protocol.max_users:
        return None
    pick = np.random.default_rng([protocol.seed, 0]).choice(n, protocol.max_users, replace=False)
    pick.sort()
    skipped["not in the seeded sample (max_users)"] = n - protocol.max_users
    return pick


def _reasons(skipped: dict[str, int]) -> str:
    return "; ".join(f"{n:,} users: {why}" for why, n in skipped.items() if n) or "no users"


def _last_episodes(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per user: (user, item, log position of the first event) of their last episode, the run
    of consecutive interactions with the same item that ends their sequence."""
    order = np.argsort(users, kind="stable")  # each user's rows, in log order
    u, i = users[order], items[order]
    starts = np.ones(len(u), dtype=bool)
    starts[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    run_start = np.maximum.accumulate(np.where(starts, np.arange(len(u)), 0))
    last = np.flatnonzero(np.r_[u[1:] != u[:-1], True])
    return u[last], i[last], order[run_start[last]]


def _first_time(users: np.ndarray, times: np.ndarray, n_users: int) -> np.ndarray:
    first = np.full(n_users, np.iinfo(np.int64).max)
    np.minimum.at(first, users, times)
    return first


def _seen_keys(
    train_users: np.ndarray,
    train_items: np.ndarray,
    held_user: np.ndarray,
    n_users: int,
    n_items: int,
) -> np.ndarray:
    """Sorted row * n_items + item keys of the items each evaluated user interacted with."""
    row_of = np.full(n_users, -1, dtype=np.int64)
    row_of[held_user] = np.arange(len(held_user))
    rows = row_of[train_users]
    mine = rows >= 0
    return np.unique(rows[mine] * n_items + train_items[mine])


def _sample_negatives(
    rng: np.random.Generator,
    catalogue: np.ndarray,
    seen: np.ndarray,
    held_item: np.ndarray,
    n_items: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """K distinct catalogue items per row, none the row's user interacted with (`seen`), nor
    its held-out item.

    Draws with replacement, drops seen items and repeats, keeps the first K in draw order; rows
    left short (users who saw much of the catalogue) draw exactly from what they have not seen.

    Returns:
        The [rows, K] item codes, and which rows had K items to draw from.
    """
    n = len(held_item)
    out = np.zeros((n, k), dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    excluded = np.unique(np.concatenate([seen, np.arange(n) * n_items + held_item]))
    draws_per_row = k + k // 2 + 8
    for start in range(0, n, _SAMPLE_CHUNK):
        rows = np.arange(start, min(start + _SAMPLE_CHUNK, n))
        draws = catalogue[rng.integers(0, len(catalogue), size=(len(rows), draws_per_row))]
        keys = rows[:, None] * n_items + draws
        pos = np.searchsorted(excluded, keys)
        hit = excluded[np.minimum(pos, len(excluded) - 1)] == keys
        first = np.zeros(keys.size, dtype=bool)
        first[np.unique(keys.ravel(), return_index=True)[1]] = True
        valid = ~hit & first.reshape(keys.shape)
        taken = valid & (np.cumsum(valid, axis=1) <= k)
        full = taken.sum(axis=1) == k
        out[rows[full]] = draws[full][taken[full]].reshape(-1, k)
        for row in rows[~full]:
            lo, hi = np.searchsorted(excluded, [row * n_items, (row + 1) * n_items])
            unseen = np.setdiff1d(catalogue, excluded[lo:hi] - row * n_items, assume_unique=True)
            if len(unseen) < k:
                ok[row] = False
            else:
                out[row] = rng.choice(unseen, k, replace=False)
    return out, ok


__all__ = ["KINDS", "EvalProtocol", "EvalTasks", "Kind", "build_tasks", "timestamps_ns"]
