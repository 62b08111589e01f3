"""Reliability harness: a steady Rank load on a gateway while a fault is injected and removed,
then every answer reconciled, by request id, against what the gateway logged.

`run_scenario` drives one `Scenario` (load, fault, restore, load: scoring.devtools.load) and
judges its promise: no error outside the promised codes, every request answered within its
deadline, degraded only as promised, recovered, and every answer in the served-feature log
and the request events exactly once (every accepted Feedback in the feedback events exactly
once: scoring.devtools.reconcile). The faults themselves, on a stack of real servers:
scoring.devtools.faults.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from scoring.devtools.load import (
    DEGRADED,
    OK,
    FeedbackRecord,
    LoadRunner,
    LoadShape,
    RankRecord,
    unique_prefix,
)
from scoring.devtools.reconcile import GatewayLogs, LogCheck

logger = logging.getLogger(__name__)


# --- recovery ---------------------------------------------------------------------------------


def recovery_time(records: Iterable[RankRecord], since: float, consecutive: int) -> float | None:
    """Seconds from `since` to the answer of the first of `consecutive` requests in a row
    (in the order sent, among those sent from `since`) answered OK and not degraded; None when
    there is no such run."""
    after = sorted((r for r in records if r.sent >= since), key=_sent)
    run = 0
    for i, record in enumerate(after):
        run = run + 1 if record.outcome == OK else 0
        if run == consecutive:
            first = after[i - consecutive + 1]
            assert first.answered is not None
            return max(first.answered - since, 0.0)
    return None


# --- scenarios --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One part of a promise, judged."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Phases:
    """Seconds of load before the fault, with it, and after it is removed.

    Attributes:
        after_s: the after phase's length, or (with `linger_s`) its longest.
        linger_s: end the after phase this long after recovery (None: run it all).
    """

    before_s: float = 3.0
    during_s: float = 6.0
    after_s: float = 10.0
    linger_s: float | None = None


@dataclass(frozen=True, slots=True)
class Timeline:
    """When the fault went in and out (monotonic clock): inject and restore may take time."""

    inject_started: float
    injected: float
    restore_started: float
    restored: float

    def during(self, record: RankRecord, grace_s: float = 0.3) -> bool:
        """Sent once the fault was in place (and `grace_s` settled), answered before it was
        removed."""
        end = record.answered if record.answered is not None else math.inf
        return record.sent >= self.injected + grace_s and end <= self.restore_started


Action = Callable[[], object]


@dataclass
class Scenario:
    """A fault, the promised behaviour under it, and how to judge the promise.

    Attributes:
        prepare: runs before the load starts (e.g. restart the gateway in a state to test).
        midway: runs halfway through the fault (e.g. attempt a promotion while it lasts).
        allowed_codes: gRPC error codes the promise allows (others are failures).
        allowed_degradations: prefixes of the degradation reasons the promise allows.
        degraded_while_down: every answer while the fault lasts must be flagged degraded.
        needs_recovery: the promise includes recovering (else recovery is reported only).
        recovers_from_fault: recovery counts from the fault, not from its removal: a fault
            nothing removes (a killed stub), which the system must heal by itself.
        recovered: the scenario's own sign of health after the fault (polled after restore);
            recovery is reached when it and the answers are back.
        checks: more of the promise, judged on the run's requests after it ended.
        counted_drops: the served-feature log rows the gateway counted as not logged (its
            queue was full): the log may miss exactly these, no more.
        finish: runs once the logs are reconciled (e.g. the normal gateway back).
    """

    name: str
    fault: str
    promise: str
    inject: Action
    restore: Action
    phases: Phases = field(default_factory=Phases)
    prepare: Action | None = None
    midway: Action | None = None
    allowed_codes: frozenset[str] = frozenset()
    allowed_degradations: tuple[str, ...] = ()
    degraded_while_down: bool = False
    needs_recovery: bool = True
    consecutive: int = 5
    recovers_from_fault: bool = False
    recovered: Callable[[], bool] | None = None
    checks: Callable[[Timeline, Sequence[RankRecord]], list[Check]] | None = None
    counted_drops: Callable[[], float] | None = None
    finish: Action | None = None


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What a scenario measured, and its verdict."""

    name: str
    fault: str
    promise: str
    sent: int
    ok: int
    degraded: int
    failed: int
    over_deadline: int
    lost: int
    duplicated: int
    recovery_s: float | None  # None: not recovered before the end
    recovery_from: str  # what recovery_s counts from: "the restore" or "the fault"
    feedback_sent: int
    feedback_accepted: int
    errors: dict[str, int]
    degradations: dict[str, int]
    logs: tuple[LogCheck, ...]
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def failures(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]


def run_scenario(
    scenario: Scenario,
    address: str,
    logs: GatewayLogs,
    shape: LoadShape,
    *,
    settle_timeout_s: float = 15.0,
) -> ScenarioResult:
    """Load before, during and after the fault, then the logs reconciled and the promise
    judged. The fault is removed (`restore`) whatever happens in between."""
    trouble: list[Check] = []

    def act(step: str, action: Action | None) -> None:
        if action is None:
            return
        try:
            action()
        except Exception as exc:
            logger.exception("scenario %s: %s failed", scenario.name, step)
            trouble.append(Check(f"{step} ran", False, f"{type(exc).__name__}: {exc}"))

    phases = scenario.phases
    act("prepare", scenario.prepare)
    load = LoadRunner(address, unique_prefix(scenario.name), shape)
    probed: float | None = None
    with load:
        time.sleep(phases.before_s)
        inject_started = injected = time.monotonic()
        try:
            act("inject", scenario.inject)
            injected = time.monotonic()
            time.sleep(phases.during_s / 2)
            act("midway", scenario.midway)
            time.sleep(max(injected + phases.during_s - time.monotonic(), 0.0))
        finally:
            restore_started = time.monotonic()
            act("restore", scenario.restore)
            restored = time.monotonic()
        end = restored + phases.after_s
        while time.monotonic() < end:
            if scenario.recovered is not None and probed is None and _healthy(scenario.recovered):
                probed = time.monotonic()
            if phases.linger_s is not None and (scenario.recovered is None or probed):
                since = injected if scenario.recovers_from_fault else restored
                back = recovery_time(list(load.records), since, scenario.consecutive)
                if back is not None:
                    end = min(end, since + back + phases.linger_s)
            time.sleep(0.1)
    timeline = Timeline(inject_started, injected, restore_started, restored)
    checks = logs.settle(load.prefix, load.records, load.feedback, settle_timeout_s)
    result = judge(scenario, timeline, load.records, load.feedback, checks, probed, trouble)
    finished = len(trouble)
    act("finish", scenario.finish)
    return replace(result, checks=(*result.checks, *trouble[finished:]))


def _healthy(probe: Callable[[], bool]) -> bool:
    try:
        return probe()
    except Exception:
        return False


def over_deadline(record: RankRecord) -> bool:
    """Not answered within its deadline: timed out, never answered, or answered late."""
    latency = record.latency_s
    return record.code == "DEADLINE_EXCEEDED" or latency is None or latency > record.deadline_s


def judge(
    scenario: Scenario,
    timeline: Timeline,
    records: Sequence[RankRecord],
    feedback: Sequence[FeedbackRecord],
    logs: Sequence[LogCheck],
    probed: float | None = None,
    trouble: Sequence[Check] = (),
) -> ScenarioResult:
    """The scenario's figures and its promise checked on them.

    Args:
        probed: when the scenario's own health probe first said healthy after the restore.
        trouble: steps of the scenario that failed to run.
    """
    errors = Counter(r.code or "NO_ANSWER" for r in records if not r.answered_ok)
    failed = sum(n for code, n in errors.items() if code not in scenario.allowed_codes)
    example = next(
        (f" (e.g. {r.code}: {r.detail[:160]!r})" for r in records if r.detail and
         r.code not in scenario.allowed_codes),
        "",
    )  # fmt: skip
    late = sum(over_deadline(r) for r in records)
    since = timeline.injected if scenario.recovers_from_fault else timeline.restored
    recovery = recovery_time(records, since, scenario.consecutive)
    if scenario.recovered is not None:
        recovery = None if recovery is None or probed is None else max(recovery, probed - since)
    recovery_from = "the fault" if scenario.recovers_from_fault else "the restore"
    lost = {k for c in logs for k in c.lost}
    duplicated = {k for c in logs for k in c.duplicated}
    checks = [
        Check(
            "no error outside the promise",
            failed == 0,
            ", ".join(f"{code} x{n}" for code, n in errors.most_common()) + example,
        ),
        Check(
            "every request answered within its deadline",
            late == 0,
            f"{late} of {len(records)} not" if late else "",
        ),
    ]
    for log in logs:
        if scenario.counted_drops is not None and log.log == "served-feature log":
            checks.append(_counted(scenario.counted_drops, log, records))
            continue
        checks.append(
            Check(
                f"{log.log}: each exactly once",
                not log.lost and not log.duplicated,
                f"{len(log.lost)} lost, {len(log.duplicated)} duplicated of {log.expected}"
                + (
                    f" (e.g. {(log.lost or log.duplicated)[0]})"
                    if log.lost or log.duplicated
                    else ""
                ),
            )
        )
    checks += _degradation_checks(scenario, timeline, records)
    if scenario.needs_recovery:
        checks.append(
            Check(
                "recovered by itself",
                recovery is not None,
                f"{recovery:.2f} s after {recovery_from}"
                if recovery is not None
                else f"not within {scenario.phases.after_s:g} s of the restore",
            )
        )
    if scenario.checks is not None:
        checks += scenario.checks(timeline, records)
    checks += trouble
    answered = [r for r in records if r.answered_ok]
    return ScenarioResult(
        name=scenario.name,
        fault=scenario.fault,
        promise=scenario.promise,
        sent=len(records),
        ok=sum(r.outcome == OK for r in answered),
        degraded=sum(r.outcome != OK for r in answered),
        failed=failed,
        over_deadline=late,
        lost=len(lost),
        duplicated=len(duplicated),
        recovery_s=recovery,
        recovery_from=recovery_from,
        feedback_sent=len(feedback),
        feedback_accepted=sum(f.accepted for f in feedback),
        errors=dict(errors),
        degradations=degradation_counts(records),
        logs=tuple(logs),
        checks=tuple(checks),
    )


def _counted(
    counted_drops: Callable[[], float], log: LogCheck, records: Sequence[RankRecord]
) -> Check:
    """The log misses exactly the rows the gateway counted as dropped, and repeats none."""
    lost = set(log.lost)
    rows = sum(r.candidates for r in records if r.request_id in lost)
    try:
        counted = counted_drops()
    except Exception as exc:
        return Check(f"{log.log}: what is missing was counted", False, f"no count: {exc}")
    return Check(
        f"{log.log}: what is missing was counted",
        rows == counted and not log.duplicated,
        f"{len(lost)} of {log.expected} requests ({rows} rows) not logged, {counted:.0f} rows "
        f"counted as dropped; {len(log.duplicated)} duplicated",
    )


def _degradation_checks(
    scenario: Scenario, timeline: Timeline, records: Sequence[RankRecord]
) -> list[Check]:
    checks = []
    if scenario.phases.before_s > 0:
        # A precondition: the stack served normally when the fault came (a stray degraded
        # answer before it, on a busy machine, is counted in the figures, not judged here).
        before = sorted(
            (r for r in records if (r.answered or math.inf) < timeline.inject_started), key=_sent
        )
        last = before[-scenario.consecutive :]
        checks.append(
            Check(
                "serving normally when the fault came",
                len(last) == scenario.consecutive and all(r.outcome == OK for r in last),
                f"the last {len(last)} answers before it: {_why(last) or 'all OK'}",
            )
        )
    allowed = scenario.allowed_degradations or ("\0",)
    unpromised = [
        reason
        for r in records
        if r.sent >= timeline.inject_started
        for reason in r.degradations
        if not reason.startswith(allowed)
    ]
    reasons = Counter(reason.split(":", 1)[0] for reason in unpromised)
    checks.append(
        Check(
            "degraded only as promised",
            not unpromised,
            ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common())
            + (f" (e.g. {unpromised[0][:160]!r})" if unpromised else ""),
        )
    )
    if scenario.degraded_while_down:
        down = [r for r in records if timeline.during(r) and r.answered_ok]
        flagged = [r for r in down if r.outcome != OK]
        checks.append(
            Check(
                "flagged degraded while the fault lasted",
                bool(down) and len(flagged) == len(down),
                f"{len(flagged)} of {len(down)} answers flagged",
            )
        )
    return checks


def _sent(record: RankRecord) -> float:
    return record.sent


def degradation_counts(records: Iterable[RankRecord]) -> dict[str, int]:
    """Answers by degradation reason (the part before the colon)."""
    counts = Counter(reason.split(":", 1)[0] for r in records for reason in r.degradations)
    return dict(counts.most_common())


def _why(records: Iterable[RankRecord]) -> str:
    """What went wrong with these requests: error codes and degradation reasons, counted."""
    reasons = Counter(
        r.code or "NO_ANSWER"
        if r.outcome != DEGRADED
        else (r.degradations or ("degraded",))[0].split(":")[0]
        for r in records
        if r.outcome != OK
    )
    return ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common())


def versions_check(records: Sequence[RankRecord]) -> Check:
    """Every answer scored by one and the same model version (the routing never changed)."""
    versions = sorted({r.model_version for r in records if r.answered_ok})
    return Check("one model version throughout", len(versions) == 1, f"versions {versions}")


def first_line(exc: BaseException | None) -> str:
    if exc is None:
        return "no error"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:240] if text else ''}"
