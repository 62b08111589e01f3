"""Per-arm experiment report: traffic, latency, scores, and CTR / conversion with confidence
intervals, from the gateway's experiment events joined with feedback by request id; the same
figures per hour or day, and cumulatively, over time (`arm_timeline`).

Unit: the request. CTR is the share of served requests with at least one click on a candidate
they returned; conversion the share with a purchase. Intervals are Wilson score intervals; the
p-value compares each arm with production (two-proportion z-test, two-sided).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from scoring.core.served_events import ShadowEvent, read_events

Z95 = 1.959963984540054


def share(successes: int, trials: int) -> float:
    """A proportion; NaN with no trials."""
    return successes / trials if trials else math.nan


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) with no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value that two proportions are equal (pooled z-test); nan if undefined."""
    if n1 == 0 or n2 == 0:
        return math.nan
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return math.nan if k1 / n1 == k2 / n2 else 0.0
    z = (k1 / n1 - k2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2))


class Rates:
    """CTR and conversion of a group of requests: shares of its requests with a click / a
    purchase on a candidate they returned, and their 95% Wilson intervals."""

    __slots__ = ()
    requests: int
    clicked: int
    purchased: int

    @property
    def ctr(self) -> float:
        return share(self.clicked, self.requests)

    @property
    def conversion(self) -> float:
        return share(self.purchased, self.requests)

    @property
    def ctr_ci(self) -> tuple[float, float]:
        return wilson(self.clicked, self.requests)

    @property
    def conversion_ci(self) -> tuple[float, float]:
        return wilson(self.purchased, self.requests)


@dataclass(frozen=True, slots=True)
class ArmStats(Rates):
    """One arm (target, arm, version) of an experiment."""

    target: str
    arm: str
    version: str
    requests: int
    users: int
    p50_ms: float
    p99_ms: float
    mean_top_score: float
    top_score_quantiles: tuple[float, float, float]  # p10, p50, p90 of the first-ranked score
    clicked: int
    purchased: int
    ctr_p_value: float
    # Feedback events (clicks, purchases) on a candidate the arm's requests returned.
    feedback_events: int = 0


def _requests(events_dir: Path) -> pd.DataFrame:
    rows = read_events(events_dir, "request")
    columns = [
        "request_id", "at", "target", "arm", "version", "user", "latency_ms", "returned", "scores",
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    # A retried request id counts once (the first answer is the one the user saw).
    return frame.drop_duplicates("request_id", keep="first")


def _feedback(events_dir: Path) -> pd.DataFrame:
    frame = pd.DataFrame(
        read_events(events_dir, "feedback"), columns=["request_id", "candidate_id", "type"]
    )
    return frame.drop_duplicates()


def _served(events_dir: Path, target: str | None) -> pd.DataFrame:
    """The served requests (of `target`), each with whether it got a click and a purchase on a
    candidate it returned, and how many such feedback events it got (`feedback`): the join
    every report here counts."""
    requests = _requests(events_dir)
    if target is not None:
        requests = requests[requests["target"] == target]
    if requests.empty:
        return requests.assign(clicked=False, purchased=False, feedback=0)
    shown = requests[["request_id", "returned"]].explode("returned").dropna()
    shown = shown.rename(columns={"returned": "candidate_id"}).drop_duplicates()
    feedback = _feedback(events_dir).merge(shown, on=["request_id", "candidate_id"])
    clicked = set(feedback.loc[feedback["type"] == "click", "request_id"])
    purchased = set(feedback.loc[feedback["type"] == "purchase", "request_id"])
    counts = feedback["request_id"].value_counts()
    return requests.assign(
        clicked=requests["request_id"].isin(clicked),
        purchased=requests["request_id"].isin(purchased),
        feedback=requests["request_id"].map(counts).fillna(0).astype(int),
    )


# Arms in reading order within a target: the control first.
_ARM_ORDER = {"production": 0, "unmanaged": 1, "canary": 2, "fallback": 3}


def _arm_key(target: str, arm: str, version: str) -> tuple[str, int, str]:
    return target, _ARM_ORDER.get(arm, 9), version


def arm_report(events_dir: Path, target: str | None = None) -> list[ArmStats]:
    """Per-arm statistics, production first within each target."""
    requests = _served(events_dir, target)
    if requests.empty:
        return []
    requests = requests.assign(
        top=[s[0] if isinstance(s, list) and s else math.nan for s in requests["scores"]],
    )
    stats: list[ArmStats] = []
    groups = requests.groupby(["target", "arm", "version"], sort=False)
    control = requests[requests["arm"].isin(("production", "unmanaged"))]
    for (tgt, arm, version), g in groups:
        latency = g["latency_ms"].to_numpy(dtype=float)
        top = g["top"].to_numpy(dtype=float)
        top = top[~np.isnan(top)]
        k, n = int(g["clicked"].sum()), len(g)
        is_base = arm in ("production", "unmanaged")
        # The control group of an arm: production requests of the same target served while the
        # arm was live (so an earlier production version's traffic does not count).
        same = control[
            (control["target"] == tgt) & control["at"].between(g["at"].min(), g["at"].max())
        ]
        bk, bn = int(same["clicked"].sum()), len(same)
        stats.append(
            ArmStats(
                target=str(tgt),
                arm=str(arm),
                version=str(version),
                requests=n,
                users=int(g["user"].nunique()),
                p50_ms=float(np.percentile(latency, 50)),
                p99_ms=float(np.percentile(latency, 99)),
                mean_top_score=float(np.nanmean(top)) if top.size else math.nan,
                top_score_quantiles=(
                    tuple(float(q) for q in np.percentile(top, (10, 50, 90)))  # type: ignore[arg-type]
                    if top.size
                    else (math.nan, math.nan, math.nan)
                ),
                clicked=k,
                purchased=int(g["purchased"].sum()),
                ctr_p_value=math.nan if is_base else two_proportion_p(k, n, bk, bn),
                feedback_events=int(g["feedback"].sum()),
            )
        )
    stats.sort(key=lambda s: _arm_key(s.target, s.arm, s.version))
    return stats


Bucket = Literal["hour", "day"]
BUCKET_SECONDS: dict[str, int] = {"hour": 3600, "day": 86400}
# Hourly buckets up to this span of served requests, daily ones beyond (at most ~72 points).
HOURLY_UP_TO_S = 3 * 86400


@dataclass(frozen=True, slots=True)
class Counts(Rates):
    """Requests and what their feedback says: CTR and conversion with 95% Wilson intervals."""

    requests: int
    feedback_events: int  # feedback events on a candidate these requests returned
    clicked: int  # requests with a click
    purchased: int  # requests with a purchase


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """One time bucket of an arm: the requests served in it (their feedback whenever it came),
    and the arm's running totals up to the bucket's end."""

    start: float  # Unix seconds, UTC, a whole hour or day
    end: float
    window: Counts
    cumulative: Counts


@dataclass(frozen=True, slots=True)
class ArmTimeline:
    target: str
    arm: str
    version: str
    points: tuple[TimelinePoint, ...]  # every bucket from the arm's first to its last


@dataclass(frozen=True, slots=True)
class Timeline:
    bucket: Bucket
    arms: tuple[ArmTimeline, ...]  # in arm_report's order


def choose_bucket(first: float, last: float) -> Bucket:
    """Hours for a span of served requests up to three days, days beyond."""
    return "hour" if last - first <= HOURLY_UP_TO_S else "day"


def arm_timeline(
    events_dir: Path, target: str | None = None, bucket: Bucket | None = None
) -> Timeline:
    """Per arm (target, arm, version) and time bucket: requests, feedback events, clicks,
    purchases, CTR and conversion with their intervals, in the bucket and cumulatively.

    A request counts in the bucket it was served in, with its feedback whenever that came (the
    same join and definitions as `arm_report`, whose figures the last cumulative point equals).

    Args:
        bucket: "hour" or "day"; None chooses from the span of the requests (`choose_bucket`).
    """
    requests = _served(events_dir, target)
    if requests.empty:
        return Timeline(bucket or "hour", ())
    at = requests["at"].astype(float)
    chosen: Bucket = bucket or choose_bucket(float(at.min()), float(at.max()))
    size = BUCKET_SECONDS[chosen]
    requests = requests.assign(bucket=(at // size).astype("int64"))
    arms = []
    for (tgt, arm, version), g in requests.groupby(["target", "arm", "version"], sort=False):
        per = g.groupby("bucket").agg(
            requests=("request_id", "size"),
            feedback=("feedback", "sum"),
            clicked=("clicked", "sum"),
            purchased=("purchased", "sum"),
        )
        per = per.reindex(range(int(per.index.min()), int(per.index.max()) + 1), fill_value=0)
        running = per.cumsum()
        points = tuple(
            TimelinePoint(
                start=float(b * size),
                end=float((b + 1) * size),
                window=Counts(*(int(v) for v in per.loc[b])),
                cumulative=Counts(*(int(v) for v in running.loc[b])),
            )
            for b in per.index
        )
        arms.append(ArmTimeline(str(tgt), str(arm), str(version), points))
    arms.sort(key=lambda a: _arm_key(a.target, a.arm, a.version))
    return Timeline(chosen, tuple(arms))


@dataclass(frozen=True, slots=True)
class ShadowStats:
    """How a shadow version's scores compare with the served ones on the same requests."""

    target: str
    version: str
    primary_version: str
    requests: int
    mean_abs_diff: float
    spearman: float
    top1_agreement: float
    p50_ms: float


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return math.nan
    ra, rb = a.argsort().argsort(), b.argsort().argsort()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def shadow_report(events_dir: Path, target: str | None = None) -> list[ShadowStats]:
    """Per shadow version: score differences and ranking agreement with the served version."""
    rows = read_events(events_dir, "shadow")
    by_key: dict[tuple[str, str, str], list[ShadowEvent]] = {}
    for row in rows:
        if target is not None and row["target"] != target:
            continue
        key = (row["target"], row["version"], row["primary_version"])
        by_key.setdefault(key, []).append(row)
    out = []
    for (tgt, version, primary), group in sorted(by_key.items()):
        diffs, rhos, agree, latency = [], [], [], []
        for row in group:
            s = np.asarray(row["scores"], dtype=float)
            p = np.asarray(row["primary_scores"], dtype=float)
            diffs.append(float(np.abs(s - p).mean()))
            rhos.append(_spearman(s, p))
            agree.append(float(s.argmax() == p.argmax()))
            latency.append(float(row["latency_ms"]))
        out.append(
            ShadowStats(
                tgt,
                version,
                primary,
                len(group),
                float(np.mean(diffs)),
                float(np.nanmean(rhos)) if not all(math.isnan(r) for r in rhos) else math.nan,
                float(np.mean(agree)),
                float(np.percentile(latency, 50)),
            )
        )
    return out
