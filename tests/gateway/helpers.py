"""Test helpers: views of an online read (a DataFrame per read, with its age and expiry
attached), and a clock the test moves by hand."""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd

from scoring.core.contract import FeatureContract
from scoring.core.targets import Target
from scoring.gateway.feature_source import FeatureRequest, FeatureSource, OnlineFeatures

AGE_ATTR = "feature_age_s"
EXPIRED_ATTR = "expired_rows"


def frame(online: OnlineFeatures) -> pd.DataFrame:
    """The read's columns as a DataFrame (one row per candidate)."""
    return pd.DataFrame(online.columns)


def fetch(
    source: FeatureSource,
    contract: FeatureContract,
    target: Target,
    user_id: str,
    candidate_ids: tuple[str, ...],
    request_values: dict[str, Any],
) -> pd.DataFrame:
    """One read through the source's `read`: one row per candidate, columns named by full
    feature name (None/NaN when missing); `attrs[AGE_ATTR]` maps each view read to its feature
    age in seconds, `attrs[EXPIRED_ATTR]` to its rows past the view's ttl."""
    request = FeatureRequest(contract, target, user_id, candidate_ids, request_values)
    online = asyncio.run(source.read(request))
    out = frame(online)
    out.attrs[AGE_ATTR] = online.age_s
    out.attrs[EXPIRED_ATTR] = online.expired
    return out


class Clock:
    """A monotonic clock for code that takes one: `now` moves only when the test sets it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now
