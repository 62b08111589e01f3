"""Per-arm experiment report: traffic, latency, scores, and CTR / conversion with confidence
intervals, from the gateway's experiment events joined with feedback by request id.

Unit: the request. CTR is the share of served requests with at least one click on a candidate
they returned; conversion the share with a purchase. Intervals are Wilson score intervals; the
p-value compares each arm with production (two-proportion z-test, two-sided).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True, slots=True)
class ArmStats:
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

    # CTR and conversion: shares of the arm's requests, and their 95% Wilson intervals.
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


def arm_report(events_dir: Path, target: str | None = None) -> list[ArmStats]:
    """Per-arm statistics, production first within each target."""
    requests = _requests(events_dir)
    if target is not None:
        requests = requests[requests["target"] == target]
    if requests.empty:
        return []
    shown = requests[["request_id", "returned"]].explode("returned").dropna()
    shown = shown.rename(columns={"returned": "candidate_id"})
    feedback = _feedback(events_dir).merge(shown, on=["request_id", "candidate_id"])
    clicked = set(feedback.loc[feedback["type"] == "click", "request_id"])
    purchased = set(feedback.loc[feedback["type"] == "purchase", "request_id"])
    requests = requests.assign(
        clicked=requests["request_id"].isin(clicked),
        purchased=requests["request_id"].isin(purchased),
        top=[s[0] if isinstance(s, list) and s else math.nan for s in requests["scores"]],
    )
    stats: list[ArmStats] = []
    order = {"production": 0, "unmanaged": 1, "canary": 2, "fallback": 3}
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
            )
        )
    stats.sort(key=lambda s: (s.target, order.get(s.arm, 9), s.version))
    return stats


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
