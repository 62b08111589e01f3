"""Implicit examples: positive episodes, weights, and negatives the user had never touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.core.settings import ImplicitFeedbackSettings
from scoring.evaluation import EvalProtocol, PositiveEvents, build_tasks, load_interactions
from scoring.trainer.implicit import (
    KIND,
    WEIGHT,
    TrainingDataError,
    implicit_examples,
    positive_events,
)

DAY = 86_400
T0 = 1_700_006_400  # a UTC midnight
WEIGHTS = PositiveEvents().weights()


def write_log(folder: Path, events: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    events = events.assign(timestamp=pd.to_datetime(events["timestamp"], unit="s", utc=True))
    events.to_parquet(folder / "events.parquet", index=False)
    return folder


def random_log(seed: int = 0, users: int = 40, items: int = 60, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kinds = np.array(["view", "click", "add_to_cart", "purchase", "impression"])
    return pd.DataFrame(
        {
            "user_id": [f"u{k:03d}" for k in rng.integers(0, users, n)],
            "item_id": [f"i{k:03d}" for k in rng.zipf(1.5, n) % items],
            "event_type": kinds[rng.choice(5, n, p=[0.4, 0.2, 0.1, 0.15, 0.15])],
            "timestamp": T0 + np.sort(rng.integers(0, 30 * DAY, n)),
        }
    )


def settings(**kw: object) -> ImplicitFeedbackSettings:
    return ImplicitFeedbackSettings(**{"max_rows": 10**7, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    events = random_log()
    return write_log(tmp_path_factory.mktemp("implicit") / "data", events), events


def test_negatives_are_never_items_the_user_had_touched_by_then(
    log: tuple[Path, pd.DataFrame],
) -> None:
    folder, events = log
    rows = implicit_examples(folder, settings()).rows
    negatives = rows[rows["clicked"] == 0]
    assert len(negatives) > 1000
    touched = events[events["event_type"] != "impression"]
    first = touched.groupby(["user_id", "item_id"])["timestamp"].min().rename("first")
    joined = negatives.join(first, on=["user_id", "item_id"])
    assert not (joined["first"] <= joined["request_ts"]).any()
    # Every negative is an item some user interacted with before that time (the pool).
    item_first = touched.groupby("item_id")["timestamp"].min()
    assert (negatives["item_id"].map(item_first) < negatives["request_ts"]).all()


def test_each_negative_sits_at_its_positives_time_with_its_weight(
    log: tuple[Path, pd.DataFrame],
) -> None:
    folder, _ = log
    cfg = settings(negatives=6, popularity_share=1 / 3)
    examples = implicit_examples(folder, cfg)
    rows = examples.rows
    positives = rows[rows["clicked"] == 1]
    negatives = rows[rows["clicked"] == 0]
    key = ["user_id", "request_ts", WEIGHT]
    per_positive = positives.groupby(key).size()
    per_group = negatives.groupby(key).size()
    assert set(per_group.index) <= set(per_positive.index)
    assert (per_group <= 6 * per_positive.reindex(per_group.index)).all()
    assert (rows["event_timestamp"].astype("int64") // 10**9 == rows["request_ts"]).all()
    # The mix: 2 of 6 by popularity, 4 uniform, for every positive (a few may find none).
    kinds = negatives[KIND].value_counts()
    assert kinds["popularity"] + examples.stats["negatives_not_found"] >= 2 * len(positives)
    assert kinds["uniform"] + examples.stats["negatives_not_found"] >= 4 * len(positives)
    assert kinds["popularity"] <= 2 * len(positives) and kinds["uniform"] <= 4 * len(positives)
    assert set(positives[WEIGHT]) <= set(WEIGHTS.values())


def test_an_episode_is_one_positive_at_its_start_with_its_best_weight(tmp_path: Path) -> None:
    events = pd.DataFrame(
        {
            "user_id": ["a"] * 6 + ["b"] * 2,
            "item_id": ["x", "x", "x", "y", "x", "z", "z", "y"],
            "event_type": ["view", "add_to_cart", "purchase", "view", "view", "impression"]
            + ["click", "view"],
            "timestamp": T0 + np.array([10, 20, 30, 40, 50, 60, 70, 80]) * 3600,
        }
    )
    folder = write_log(tmp_path / "data", events)
    rows = implicit_examples(folder, settings(negatives=1)).rows
    got = rows[rows["clicked"] == 1].sort_values(["user_id", "request_ts"])
    assert got[["user_id", "item_id"]].values.tolist() == [
        ["a", "x"], ["a", "y"], ["a", "x"], ["b", "z"], ["b", "y"]
    ]  # fmt: skip
    assert (got["request_ts"] - T0).tolist() == [36_000, 144_000, 180_000, 252_000, 288_000]
    assert got[WEIGHT].tolist() == pytest.approx([1.0, 0.3, 0.3, 0.5, 0.3])
    assert got["purchased"].tolist() == [1, 0, 0, 0, 0]


def test_only_the_configured_event_types_are_positives(log: tuple[Path, pd.DataFrame]) -> None:
    folder, events = log
    rows = implicit_examples(folder, settings(positive_events={"purchase": 1.0})).rows
    positives = rows[rows["clicked"] == 1]
    bought = events[events["event_type"] == "purchase"]
    assert len(positives) <= len(bought) and (positives[WEIGHT] == 1.0).all()
    assert set(zip(positives["user_id"], positives["item_id"], strict=True)) <= set(
        zip(bought["user_id"], bought["item_id"], strict=True)
    )
    with pytest.raises(TrainingDataError, match="unknown event type.*'like'"):
        positive_events(settings(positive_events={"like": 1.0}))


def test_popularity_negatives_follow_popularity(log: tuple[Path, pd.DataFrame]) -> None:
    folder, events = log
    top = events[events["event_type"] != "impression"]["item_id"].value_counts()
    share: dict[float, float] = {}
    for popular in (0.0, 1.0):
        rows = implicit_examples(folder, settings(popularity_share=popular)).rows
        negatives = rows[rows["clicked"] == 0]
        share[popular] = float(negatives["item_id"].isin(top.index[:5]).mean())
    assert share[1.0] > 2 * share[0.0]


def test_the_row_cap_keeps_a_seeded_sample_of_positive_episodes_across_users(
    log: tuple[Path, pd.DataFrame],
) -> None:
    folder, _ = log
    everything = implicit_examples(folder, settings()).rows
    capped = implicit_examples(folder, settings(max_rows=2000)).rows
    again = implicit_examples(folder, settings(max_rows=2000)).rows
    other = implicit_examples(folder, settings(max_rows=2000, seed=8)).rows
    pd.testing.assert_frame_equal(capped, again)
    assert len(capped) <= 2000 < len(everything)

    def positives(rows: pd.DataFrame) -> set[tuple[str, str, object]]:
        mine = rows[rows["clicked"] == 1]
        return set(zip(mine["user_id"], mine["item_id"], mine["request_ts"], strict=True))

    kept, all_positives = positives(capped), positives(everything)
    assert kept < all_positives and kept != positives(other)
    # a uniform sample of episodes, not a few whole users: (nearly) every user keeps some
    users = everything.loc[everything["clicked"] == 1, "user_id"].nunique()
    assert capped.loc[capped["clicked"] == 1, "user_id"].nunique() >= 0.9 * users
    # each kept positive keeps its negatives
    per_positive = 1 + settings().negatives
    assert len(kept) < len(capped) <= len(kept) * per_positive


def test_the_loo_holdout_leaves_out_what_evaluate_holds_out(
    log: tuple[Path, pd.DataFrame],
) -> None:
    folder, _ = log
    rows = implicit_examples(folder, settings(), holdout="loo").rows
    tasks = build_tasks(load_interactions(folder), EvalProtocol("loo", 1, max_users=None))
    held = tasks.heldout.assign(user_id=tasks.heldout["user_id"].astype(str))
    at = held.set_index("user_id")["timestamp"]
    times = pd.to_datetime(rows["event_timestamp"], utc=True)
    ends = rows["user_id"].map(at)
    assert ends.notna().any()
    assert not (times >= ends).any()
    full = implicit_examples(folder, settings()).rows
    assert len(full) > len(rows)


def test_a_log_without_positives_is_refused_by_name(tmp_path: Path) -> None:
    events = random_log(1, n=200)
    folder = write_log(tmp_path / "data", events[events["event_type"] == "impression"])
    with pytest.raises(TrainingDataError, match="no positive event.*the log has impression"):
        implicit_examples(folder, settings())
    with pytest.raises(TrainingDataError, match="no event log at"):
        implicit_examples(tmp_path / "elsewhere", settings())
