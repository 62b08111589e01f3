"""The reliability harness's bookkeeping on synthetic records: reconciliation against logs in the
gateway's own layout (written by its writers), recovery time and the verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scoring.devtools.load import DEGRADED, ERROR, OK, FeedbackRecord, RankRecord
from scoring.devtools.reconcile import GatewayLogs, LogCheck, reconcile
from scoring.devtools.reliability import (
    Phases,
    Scenario,
    Timeline,
    judge,
    recovery_time,
)
from scoring.gateway.event_writer import ServedEventWriter
from scoring.gateway.feature_log import FeatureLog, ServedRequest

RESTORED = 100.0


def answer(
    i: int,
    outcome: str = OK,
    sent: float | None = None,
    latency: float = 0.05,
    code: str = "",
    degradations: tuple[str, ...] = (),
) -> RankRecord:
    """Request i, sent i/10 s after the restore unless `sent` says when, answered `latency`
    later."""
    start = RESTORED + i * 0.1 if sent is None else sent
    record = RankRecord(f"t-{i:06d}", i, start, 1.0, 3, outcome, code, degradations=degradations)
    record.answered = start + latency
    return record


def served(request_id: str, n: int = 3) -> ServedRequest:
    return ServedRequest(
        request_id=request_id,
        served_at=1_700_000_000.0,
        user_id="u_1",
        target="item_ranker",
        model_version="1",
        schema_hash="abc",
        candidate_ids=tuple(f"i_{k}" for k in range(n)),
        features=np.zeros((n, 4), dtype=np.float32),
        scores=np.zeros(n, dtype=np.float32),
        ranks=np.arange(1, n + 1, dtype=np.int32),
        degraded=False,
    )


def test_reconcile_finds_lost_partial_and_duplicated_keys() -> None:
    expected = {"a": 3, "b": 3, "c": 3, "d": 1}
    lost, duplicated = reconcile(expected, {"a": 3, "b": 6, "c": 2, "x": 1})
    assert lost == ["c", "d"]  # c: a partial copy, d: none
    assert duplicated == ["b"]


def test_the_gateway_logs_are_reconciled_by_request_id(tmp_path: Path) -> None:
    """Each answered request once in the served-feature log and the request events: one lost
    from both (never logged), one duplicated in both (logged twice), one Feedback lost."""
    served_dir, events_dir = tmp_path / "served", tmp_path / "events"
    feature_log = FeatureLog(served_dir, flush_interval_s=0.05)
    events = ServedEventWriter(events_dir, "gw-test", linger_s=0.01)
    records = [answer(i) for i in range(4)]
    ids = [r.request_id for r in records]
    for request_id in [ids[0], ids[1], ids[1], ids[3]]:  # ids[2] lost, ids[1] twice
        feature_log.append(served(request_id))
        events.append(
            "request",
            {
                "request_id": request_id, "at": 0.0, "target": "item_ranker",
                "arm": "production", "version": "1", "user": "h", "candidates": 3,
                "returned": [], "scores": [], "latency_ms": 1.0, "degraded": False,
            },
        )  # fmt: skip
    events.append(
        "feedback",
        {"request_id": ids[0], "candidate_id": "i_0", "type": "click", "at": 0.0, "matched": True},
    )
    feature_log.close()
    events.close()
    clicks = [FeedbackRecord(ids[0], "i_0", True), FeedbackRecord(ids[3], "i_1", True)]
    clicks.append(FeedbackRecord(ids[1], "i_2", False))  # refused: nothing to find

    checks = GatewayLogs(served_dir, events_dir).check("t-", records, clicks)

    by_log = {c.log: c for c in checks}
    for log in ("served-feature log", "request events"):
        assert by_log[log] == LogCheck(log, 4, (ids[2],), (ids[1],))
    assert by_log["feedback events"] == LogCheck("feedback events", 2, (f"{ids[3]} i_1",), ())
    other = GatewayLogs(served_dir, events_dir).check("other-", [], [])
    assert all(c.expected == 0 and not c.lost for c in other), "another run's ids are ignored"


def test_recovery_is_the_first_of_n_normal_answers_in_a_row() -> None:
    records = [answer(-3, DEGRADED, sent=RESTORED - 0.3)]  # before the restore: not counted
    records += [answer(0, DEGRADED), answer(1), answer(2), answer(3, ERROR, code="UNAVAILABLE")]
    records += [answer(i) for i in range(4, 9)]
    # Two OK, then an error: the run that counts starts at request 4 (answered at 0.45 s).
    assert recovery_time(records, RESTORED, 3) == pytest.approx(0.45)
    assert recovery_time(records, RESTORED, 6) is None, "only five in a row"
    late = [answer(i, sent=RESTORED + 5 + i * 0.1) for i in range(3)]
    assert recovery_time(late, RESTORED, 3) == pytest.approx(5.05)


def test_the_verdict_names_each_broken_promise() -> None:
    scenario = Scenario(
        name="synthetic",
        fault="none",
        promise="answers degraded `features_*` while down, recovered",
        inject=lambda: None,
        restore=lambda: None,
        phases=Phases(1.0, 1.0, 1.0),
        allowed_degradations=("features_",),
        degraded_while_down=True,
        consecutive=2,
    )
    timeline = Timeline(RESTORED - 2.0, RESTORED - 1.9, RESTORED - 0.5, RESTORED)
    before = [answer(i, sent=RESTORED - 3 + i * 0.1) for i in range(3)]
    during = [answer(10, DEGRADED, sent=RESTORED - 1.5, degradations=("features_unavailable: x",))]
    during.append(answer(11, DEGRADED, sent=RESTORED - 1.4, degradations=("model_unavailable",)))
    during.append(answer(12, ERROR, sent=RESTORED - 1.3, latency=1.2, code="DEADLINE_EXCEEDED"))
    after = [answer(20, sent=RESTORED), answer(21, sent=RESTORED + 0.1)]
    logs = [LogCheck("served-feature log", 7, ("t-000010",), ("t-000020",))]

    result = judge(scenario, timeline, before + during + after, [], logs)

    assert (result.sent, result.ok, result.degraded, result.failed) == (8, 5, 2, 1)
    assert (result.over_deadline, result.lost, result.duplicated) == (1, 1, 1)
    assert result.recovery_s == pytest.approx(0.05)
    assert result.degradations == {"features_unavailable": 1, "model_unavailable": 1}
    assert result.verdict == "FAIL"
    failed = {c.name for c in result.checks if not c.passed}
    assert failed == {
        "no error outside the promise",
        "every request answered within its deadline",
        "served-feature log: each exactly once",
        "degraded only as promised",
    }
    passed = judge(scenario, timeline, before + during[:1] + after, [], [])
    assert passed.verdict == "PASS", passed.failures()


def test_a_log_may_miss_only_the_rows_counted_as_dropped() -> None:
    timeline = Timeline(RESTORED - 2.0, RESTORED - 1.9, RESTORED - 0.5, RESTORED)
    records = [answer(i, sent=RESTORED - 3 + i * 0.1) for i in range(6)]
    records += [answer(20 + i, sent=RESTORED + i * 0.1) for i in range(5)]
    logs = [LogCheck("served-feature log", 11, ("t-000003",), ())]  # 3 candidate rows

    def verdict(counted: float) -> bool:
        scenario = Scenario(
            "queue", "none", "drops counted", lambda: None, lambda: None, Phases(1.0, 1.0, 1.0),
            counted_drops=lambda: counted,
        )  # fmt: skip
        result = judge(scenario, timeline, records, [], logs)
        assert result.lost == 1
        return result.passed

    assert verdict(3.0)
    assert not verdict(0.0), "a row lost without being counted"
