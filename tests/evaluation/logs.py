"""Small interaction logs for the evaluation tests, built in code (no files, no model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def interactions(rows: Sequence[tuple[str, str, str, float]]) -> pd.DataFrame:
    """(user, item, event_type, hours after T0) rows as load_interactions returns them."""
    weights = {"purchase": 1.0, "add_to_cart": 0.7, "click": 0.5, "view": 0.3}
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "hours"])
    frame["timestamp"] = T0 + pd.to_timedelta(frame.pop("hours"), unit="h")
    frame["weight"] = frame["event_type"].map(weights).astype("float32")
    return frame.sort_values("timestamp", kind="stable", ignore_index=True)


def random_log(
    users: int = 600, items: int = 300, per_user: int = 8, seed: int = 3
) -> pd.DataFrame:
    """Users buying Zipf-popular items at random times over 30 days."""
    rng = np.random.default_rng(seed)
    n = users * per_user
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u:04d}" for u in np.repeat(np.arange(users), per_user)],
            "item_id": [f"i{i:04d}" for i in (rng.zipf(1.4, n) - 1) % items],
            "event_type": rng.choice(["purchase", "view", "add_to_cart"], n),
            "timestamp": T0 + pd.to_timedelta(rng.integers(0, 30 * 86_400, n), unit="s"),
        }
    )
    weights = {"purchase": 1.0, "add_to_cart": 0.7, "view": 0.3}
    frame["weight"] = frame["event_type"].map(weights).astype("float32")
    return frame.sort_values("timestamp", kind="stable", ignore_index=True)
