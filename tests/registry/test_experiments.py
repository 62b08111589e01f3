"""Experiment statistics: intervals and tests against hand-computed values, the per-arm join of
requests with feedback, and the shadow comparison."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from scoring.gateway.event_writer import ServedEventWriter
from scoring.registry.experiments import arm_report, shadow_report, two_proportion_p, wilson


def test_wilson_interval_matches_the_formula_by_hand() -> None:
    # k=10, n=100, z=1.96: centre (0.1 + 1.9208/100) / 1.038416 = 0.114603...
    lo, hi = wilson(10, 100)
    assert lo == pytest.approx(0.05522, abs=1e-4)
    assert hi == pytest.approx(0.17436, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and 0.0 < wilson(0, 10)[1] < 0.35
    assert wilson(0, 0) == (0.0, 1.0)


def test_two_proportion_p_value() -> None:
    # 20/100 vs 10/100: pooled 0.15, se 0.050498, z 1.9803, two-sided p 0.04767
    assert two_proportion_p(20, 100, 10, 100) == pytest.approx(0.04767, abs=1e-4)
    assert two_proportion_p(10, 100, 10, 100) == pytest.approx(1.0)
    assert math.isnan(two_proportion_p(1, 0, 1, 10))


def write(directory: Path, kind: str, events: list[dict[str, object]]) -> None:
    log = ServedEventWriter(directory, "test")
    for event in events:
        log.append(kind, event)  # type: ignore[call-overload]  # a report reads a few fields
    log.close()


def request(rid: str, at: float, arm: str, version: str, returned: list[str]) -> dict[str, object]:
    return {
        "request_id": rid,
        "at": at,
        "target": "item_ranker",
        "arm": arm,
        "version": version,
        "user": f"user-{rid}",
        "returned": returned,
        "scores": [0.5] * len(returned),
        "latency_ms": 10.0,
    }


def test_arm_report_joins_feedback_to_the_arm_that_served(tmp_path: Path) -> None:
    requests = [request("old", 0.0, "production", "1", ["a"])]  # before the canary: no control
    requests += [request(f"p{i}", 100.0 + i, "production", "2", ["a", "b"]) for i in range(10)]
    requests += [request(f"c{i}", 99.5 + i * 1.1, "canary", "3", ["a", "b"]) for i in range(10)]
    requests.append(dict(requests[-1]))  # a logged twice request counts once
    write(tmp_path, "request", requests)
    write(
        tmp_path,
        "feedback",
        [
            {"request_id": "p0", "candidate_id": "a", "type": "click"},
            {"request_id": "p0", "candidate_id": "b", "type": "click"},  # same request: 1
            {"request_id": "c0", "candidate_id": "a", "type": "click"},
            {"request_id": "c1", "candidate_id": "b", "type": "click"},
            {"request_id": "c2", "candidate_id": "zzz", "type": "click"},  # not shown: ignored
            {"request_id": "c1", "candidate_id": "b", "type": "purchase"},
        ],
    )
    stats = {(s.arm, s.version): s for s in arm_report(tmp_path)}
    prod, canary = stats[("production", "2")], stats[("canary", "3")]
    assert (prod.requests, prod.clicked, prod.purchased) == (10, 1, 0)
    assert (canary.requests, canary.clicked, canary.purchased) == (10, 2, 1)
    assert canary.ctr == pytest.approx(0.2)
    assert canary.ctr_ci == wilson(2, 10)
    assert canary.top_score_quantiles == (0.5, 0.5, 0.5)
    assert (canary.p50_ms, canary.users) == (10.0, 10)
    # Control: production v2 during the canary window, not v1 before it.
    assert canary.ctr_p_value == pytest.approx(two_proportion_p(2, 10, 1, 10))
    assert math.isnan(prod.ctr_p_value)
    assert stats[("production", "1")].requests == 1
    assert arm_report(tmp_path, target="activity_ranker") == []


def test_shadow_report_compares_rankings(tmp_path: Path) -> None:
    def shadow(rid: str, scores: list[float], primary: list[float], ms: float) -> dict[str, object]:
        return {
            "request_id": rid,
            "target": "item_ranker",
            "version": "2",
            "primary_version": "1",
            "scores": scores,
            "primary_scores": primary,
            "latency_ms": ms,
        }

    write(
        tmp_path,
        "shadow",
        [
            shadow("r1", [0.1, 0.2, 0.3], [0.1, 0.2, 0.4], 5.0),
            shadow("r2", [0.3, 0.2, 0.1], [0.1, 0.2, 0.3], 7.0),
        ],
    )
    (sh,) = shadow_report(tmp_path)
    assert (sh.version, sh.primary_version, sh.requests) == ("2", "1", 2)
    assert sh.mean_abs_diff == pytest.approx((0.1 / 3 + 0.4 / 3) / 2)
    assert sh.spearman == pytest.approx(0.0)  # +1 and -1
    assert sh.top1_agreement == 0.5
