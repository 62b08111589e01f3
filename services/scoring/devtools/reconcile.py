"""Reconciliation of a load run against the gateway's own logs, by request id: every OK answer
once in the served-feature log (Parquet, a row per candidate) and the request events (JSON
lines), every accepted Feedback once in the feedback events."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from scoring.core.served_events import read_events
from scoring.devtools.load import FeedbackRecord, RankRecord


def reconcile(expected: Mapping[str, int], seen: Mapping[str, int]) -> tuple[list[str], list[str]]:
    """(lost, duplicated) keys: `expected` holds the rows one copy of each key makes in a log
    (the candidates of a request in the served-feature log, 1 for an event), `seen` the rows
    found. Fewer than one copy is lost (a partial copy too), more is duplicated."""
    lost = sorted(k for k, rows in expected.items() if seen.get(k, 0) < rows)
    duplicated = sorted(k for k, rows in expected.items() if seen.get(k, 0) > rows)
    return lost, duplicated


@dataclass(frozen=True, slots=True)
class LogCheck:
    """One log reconciled: how many keys were expected, which are lost or duplicated."""

    log: str
    expected: int
    lost: tuple[str, ...]
    duplicated: tuple[str, ...]


class GatewayLogs:
    """Reads a gateway's served-feature log (Parquet) and served events (JSON lines) back,
    counting the rows of each request id under a prefix. Parquet files are complete once
    visible (the writer renames them into place) and never change: each is read once."""

    def __init__(self, feature_log_dir: Path, events_dir: Path) -> None:
        self.feature_log_dir = feature_log_dir
        self.events_dir = events_dir
        self._parquet: dict[Path, Counter[str]] = {}

    def served_rows(self, prefix: str) -> Counter[str]:
        for path in self.feature_log_dir.glob("target=*/date=*/part-*.parquet"):
            if path not in self._parquet:
                ids = pq.read_table(path, columns=["request_id"]).column("request_id")
                self._parquet[path] = Counter(ids.to_pylist())
        total: Counter[str] = Counter()
        for counts in self._parquet.values():
            total.update({k: v for k, v in counts.items() if k.startswith(prefix)})
        return total

    def request_events(self, prefix: str) -> Counter[str]:
        events = read_events(self.events_dir, "request")
        return Counter(e["request_id"] for e in events if e["request_id"].startswith(prefix))

    def feedback_events(self, prefix: str) -> Counter[str]:
        events = read_events(self.events_dir, "feedback")
        return Counter(
            feedback_key(e["request_id"], e["candidate_id"])
            for e in events
            if e["request_id"].startswith(prefix)
        )

    def check(
        self, prefix: str, records: Iterable[RankRecord], feedback: Iterable[FeedbackRecord]
    ) -> list[LogCheck]:
        """Every OK answer once in the served-feature log and the request events, every accepted
        Feedback once in the feedback events."""
        answered = [r for r in records if r.answered_ok]
        clicks = {feedback_key(f.request_id, f.candidate_id): 1 for f in feedback if f.accepted}
        wanted = [
            (
                "served-feature log",
                {r.request_id: r.candidates for r in answered},
                self.served_rows,
            ),
            ("request events", {r.request_id: 1 for r in answered}, self.request_events),
            ("feedback events", clicks, self.feedback_events),
        ]
        checks = []
        for log, expected, read in wanted:
            lost, duplicated = reconcile(expected, read(prefix))
            checks.append(LogCheck(log, len(expected), tuple(lost), tuple(duplicated)))
        return checks

    def settle(
        self,
        prefix: str,
        records: Sequence[RankRecord],
        feedback: Sequence[FeedbackRecord],
        timeout_s: float = 15.0,
        quiet_s: float = 1.0,
    ) -> list[LogCheck]:
        """`check` once the gateway has flushed: polled until nothing is missing (then once
        more after `quiet_s`, for late duplicates) or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while True:
            checks = self.check(prefix, records, feedback)
            if not any(c.lost for c in checks) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        time.sleep(quiet_s)
        return self.check(prefix, records, feedback)


def feedback_key(request_id: str, candidate_id: str) -> str:
    return f"{request_id} {candidate_id}"
