"""Basket examples: a held-out item and its cart, negatives outside the basket, the holdout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.core.codes import item_codes
from scoring.core.settings import BasketExamplesSettings
from scoring.core.targets import (
    CART_CATEGORY_FIELDS,
    CART_ITEM_FIELDS,
    CART_SIZE_FIELD,
    CART_SLOTS,
)
from scoring.evaluation import EvalProtocol, load_interactions
from scoring.evaluation.basket_protocol import build_basket_tasks
from scoring.trainer.baskets import basket_examples
from scoring.trainer.implicit import KIND, TrainingDataError

DAY = 86_400
T0 = 1_700_006_400  # a UTC midnight
REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"


def basket_log(seed: int = 0, users: int = 40, items: int = 80, orders: int = 400) -> pd.DataFrame:
    """Orders of 1-5 lines (an item may repeat), with views in between."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(orders):
        user = f"u{rng.integers(users):02d}"
        t = T0 + int(rng.integers(0, 40 * DAY))
        for line in range(int(rng.integers(1, 6))):
            item = f"i{int(rng.zipf(1.3)) % items:02d}"
            rows.append((user, item, "purchase", t + line * 60, f"o{n:04d}"))
        rows.append((user, f"i{rng.integers(items):02d}", "view", t - 3600, ""))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "order_id"])


def write_log(folder: Path, events: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    events = events.assign(timestamp=pd.to_datetime(events["timestamp"], unit="s", utc=True))
    events.sort_values("timestamp", kind="stable").to_parquet(folder / "events.parquet")
    return folder


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    events = basket_log()
    return write_log(tmp_path_factory.mktemp("baskets") / "data", events), events


def settings(**kw: object) -> BasketExamplesSettings:
    return BasketExamplesSettings(**kw)  # type: ignore[arg-type]


def decode(rows: pd.DataFrame, items: list[str]) -> list[set[str]]:
    """Each row's cart back as item ids."""
    by_code = dict(zip(item_codes(np.array(items, dtype=object)).tolist(), items, strict=True))
    codes = rows[list(CART_ITEM_FIELDS)].to_numpy()
    return [{by_code[c] for c in row if c != -1} for row in codes]


def check_examples(rows: pd.DataFrame, events: pd.DataFrame) -> None:
    """Held-out item out of its cart, cart and item from one basket, negatives outside it and
    among the items seen before it."""
    items = sorted(set(events["item_id"]))
    buys = events[events["event_type"] == "purchase"]
    basket_of = buys.groupby("order_id")["item_id"].agg(set)
    order_at = buys.groupby(["user_id", "timestamp"])["order_id"].first()
    carts = decode(rows, items)
    positives = rows["clicked"] == 1
    assert positives.any() and (~positives).any()
    item_first = events.groupby("item_id")["timestamp"].min()
    for (_, row), cart in zip(rows.iterrows(), carts, strict=True):
        basket = basket_of[order_at[(row["user_id"], row["request_ts"])]]
        # The cart fields hold the first CART_SLOTS items; cart_size counts them all.
        assert cart <= basket and len(cart) == min(row[CART_SIZE_FIELD], CART_SLOTS)
        if row["clicked"] == 1:
            assert row["item_id"] in basket and row["item_id"] not in cart
            assert row[CART_SIZE_FIELD] == len(basket) - 1
            if len(basket) <= CART_SLOTS:
                assert cart | {row["item_id"]} == basket
        else:
            assert row["item_id"] not in basket
            assert item_first[row["item_id"]] < row["request_ts"]


def test_a_held_out_item_is_never_in_its_cart_and_negatives_never_in_the_basket(
    log: tuple[Path, pd.DataFrame],
) -> None:
    folder, events = log
    examples = basket_examples(folder, settings(negatives=4, popularity_share=0.5))
    rows = examples.rows
    assert examples.stats["positives"] == (rows["clicked"] == 1).sum() > 100
    assert set(rows[KIND]) == {"positive", "popularity", "uniform"}
    assert (rows[list(CART_CATEGORY_FIELDS)] == -1).all().all()  # no item_stats table here
    assert rows["request_ts"].is_monotonic_increasing
    check_examples(rows, events)


def test_examples_are_deterministic_and_capped(log: tuple[Path, pd.DataFrame]) -> None:
    folder, _ = log
    first = basket_examples(folder, settings(max_baskets=50))
    pd.testing.assert_frame_equal(
        first.rows, basket_examples(folder, settings(max_baskets=50)).rows
    )
    assert first.stats["baskets_kept"] == 50 < int(first.stats["baskets_usable"])
    assert (first.rows["clicked"] == 1).sum() == 50
    other = basket_examples(folder, settings(max_baskets=50, seed=8)).rows
    assert not other.equals(first.rows)


def test_the_basket_holdout_leaves_out_what_the_basket_protocol_tests_on(
    log: tuple[Path, pd.DataFrame],
) -> None:
    folder, _ = log
    rows = basket_examples(folder, settings(), holdout="basket").rows
    tasks = build_basket_tasks(
        load_interactions(folder), EvalProtocol("basket", negatives=5, max_users=None)
    )
    assert tasks.cut is not None and tasks.n_users > 20
    assert (rows["event_timestamp"] < tasks.cut).all()
    assert (rows["event_timestamp"] >= tasks.cut - pd.Timedelta(days=5)).any()
    everything = basket_examples(folder, settings()).stats["positives"]
    assert (rows["clicked"] == 1).sum() < everything


def test_a_log_without_baskets_is_refused_with_the_reason(tmp_path: Path) -> None:
    events = basket_log(orders=30)
    events["order_id"] = [f"single{k}" for k in range(len(events))]
    with pytest.raises(TrainingDataError, match="no basket of 2 or more distinct purchased"):
        basket_examples(write_log(tmp_path / "data", events), settings())


def test_the_real_slice_makes_basket_examples(tmp_path: Path) -> None:
    # Ta-Feng's baskets are a customer's purchases of a day (order_id = customer-day).
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(REAL / "ta-feng" / "events.parquet", data / "events.parquet")
    examples = basket_examples(data, settings(max_baskets=400), holdout="basket")
    rows = examples.rows
    assert examples.stats["baskets_kept"] == 400 and float(examples.stats["mean_cart_size"]) > 2
    events = pd.read_parquet(data / "events.parquet")
    events["timestamp"] = pd.to_datetime(events["timestamp"], utc=True).astype("int64") // 10**9
    check_examples(rows.head(2000), events)
