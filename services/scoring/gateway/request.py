"""Validates a RankRequest and turns it into a domain query; errors name the field."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from scoring.api.v1 import scoring_pb2 as pb
from scoring.core.errors import InvalidRequestError
from scoring.core.served_events import FeedbackEvent, FeedbackType
from scoring.core.targets import DEFAULT_TARGET, TARGETS, CandidateKind, Target

MAX_ID_LENGTH = 256
# The earliest request or event time accepted, 1990-01-01: before any log this platform serves
# (the public ones start in 2000), so an earlier one is a value in the wrong unit.
EARLIEST_TIMESTAMP_S = 631_152_000
NANOS_PER_SECOND = 1_000_000_000
# What a ranked candidate adds to an answer besides its id (score, rank, flags, three reasons:
# about 70 bytes measured), rounded up; and the largest answer a batch may need: gRPC clients
# accept 4 MiB by default, a quarter of it is kept as margin.
ANSWER_BYTES_PER_CANDIDATE = 128
MAX_BATCH_ANSWER_BYTES = 3 * 1024 * 1024

KIND_OF_TYPE: dict[int, CandidateKind] = {
    pb.CANDIDATE_TYPE_ITEM: CandidateKind.ITEM,
    pb.CANDIDATE_TYPE_ACTIVITY: CandidateKind.ACTIVITY,
}
TYPE_OF_KIND: dict[CandidateKind, int] = {kind: t for t, kind in KIND_OF_TYPE.items()}


@dataclass(frozen=True, slots=True)
class RankQuery:
    """A validated Rank request."""

    request_id: str
    user_id: str
    kind: CandidateKind
    candidate_ids: tuple[str, ...]
    target: Target
    top_k: int
    request_ts: int
    device: str
    disable_fallback: bool = False
    diversity: float = 0.0
    keep_unavailable: bool = False


def _type_name(value: int) -> str:
    try:
        return str(pb.CandidateType.Name(value))  # type: ignore[arg-type,unused-ignore]
    except ValueError:
        return str(value)


def check_count(n: int, field: str, maximum: int) -> None:
    """Checks that the repeated field `field` (a plural: "candidates") holds 1 to `maximum`."""
    if n == 0:
        raise InvalidRequestError(f"{field}: at least one {field.removesuffix('s')} is required")
    if n > maximum:
        raise InvalidRequestError(f"{field}: {n} {field} exceed the maximum of {maximum}")


def _check_id(value: str, field: str) -> None:
    if not value or not value.strip():
        raise InvalidRequestError(f"{field}: must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRequestError(f"{field}: longer than {MAX_ID_LENGTH} characters")


def _iso(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds} s after 1970-01-01"


def check_timestamp(ts: Timestamp, field: str, now_s: float, max_skew_s: float) -> float:
    """Unix seconds of `ts`, once it is a time the gateway can rank or record at.

    The past is accepted from 1990 on (an imported log is ranked as of its own time); the future
    only up to `max_skew_s` ahead of the server clock: later, every stored feature would count as
    expired and the answer would be defaults presented as a normal one.

    Raises:
        InvalidRequestError: naming `field`: nanos outside [0, 1e9) (not a valid protobuf
            Timestamp), before 1990-01-01, or more than `max_skew_s` ahead of `now_s`.
    """
    if not 0 <= ts.nanos < NANOS_PER_SECOND:
        raise InvalidRequestError(
            f"{field}: nanos must be in [0, {NANOS_PER_SECOND - 1}], got {ts.nanos}"
        )
    if ts.seconds < EARLIEST_TIMESTAMP_S:
        raise InvalidRequestError(
            f"{field}: {_iso(ts.seconds)} is before {_iso(EARLIEST_TIMESTAMP_S)} "
            "(seconds since 1970-01-01 expected)"
        )
    at = ts.seconds + ts.nanos / NANOS_PER_SECOND
    if at > now_s + max_skew_s:
        raise InvalidRequestError(
            f"{field}: {_iso(ts.seconds)} is {at - now_s:.0f} s ahead of the server clock "
            f"({_iso(int(now_s))}); at most {max_skew_s:g} s of clock skew is accepted"
        )
    return at


def check_batch_size(request: pb.RankBatchRequest, max_candidates: int) -> None:
    """Checks that a batch's candidates, all requests together, and its answer stay bounded.

    Raises:
        InvalidRequestError: naming `requests`, with the batch's figures and the limit.
    """
    total = sum(len(item.candidates) for item in request.requests)
    if total > max_candidates:
        raise InvalidRequestError(
            f"requests: {total} candidates in all exceed the batch maximum of {max_candidates}; "
            "split the batch"
        )
    # The answer repeats each id next to its score, rank and reasons.
    answer = request.ByteSize() + ANSWER_BYTES_PER_CANDIDATE * total
    if answer > MAX_BATCH_ANSWER_BYTES:
        raise InvalidRequestError(
            f"requests: the answer would take about {answer / 2**20:.1f} MiB "
            f"({total} candidates), over the {MAX_BATCH_ANSWER_BYTES / 2**20:.0f} MiB a batch "
            "may return; split the batch"
        )


def parse_rank_request(
    request: pb.RankRequest, max_candidates: int, now_s: float, max_skew_s: float = 300.0
) -> RankQuery:
    """Validates `request`.

    Args:
        request: the wire request.
        max_candidates: the configured maximum number of candidates.
        now_s: the server clock (Unix seconds), used when the context has no timestamp.
        max_skew_s: how far ahead of `now_s` the context's timestamp may be.

    Raises:
        InvalidRequestError: with a message naming the offending field.
    """
    _check_id(request.user_id, "user_id")
    if len(request.request_id) > MAX_ID_LENGTH:
        raise InvalidRequestError(f"request_id: longer than {MAX_ID_LENGTH} characters")
    n = len(request.candidates)
    check_count(n, "candidates", max_candidates)
    first_type = request.candidates[0].type
    seen: dict[str, int] = {}
    for i, candidate in enumerate(request.candidates):
        _check_id(candidate.id, f"candidates[{i}].id")
        if candidate.type not in KIND_OF_TYPE:
            raise InvalidRequestError(
                f"candidates[{i}].type: unknown candidate type {_type_name(candidate.type)}; "
                "expected CANDIDATE_TYPE_ITEM or CANDIDATE_TYPE_ACTIVITY"
            )
        if candidate.type != first_type:
            raise InvalidRequestError(
                f"candidates[{i}].type: {_type_name(candidate.type)} differs from candidates[0] "
                f"({_type_name(first_type)}); one request ranks one kind of candidate"
            )
        if candidate.id in seen:
            raise InvalidRequestError(
                f"candidates[{i}].id: duplicate of candidates[{seen[candidate.id]}] "
                f"({candidate.id!r})"
            )
        seen[candidate.id] = i
    kind = KIND_OF_TYPE[first_type]

    if request.model:
        target = TARGETS.get(request.model)
        if target is None:
            raise InvalidRequestError(
                f"model: unknown model target {request.model!r}; known: {sorted(TARGETS)}"
            )
        if target.kind != kind:
            raise InvalidRequestError(
                f"model: {target.name} ranks {target.kind.value} candidates, "
                f"not {kind.value} candidates"
            )
    else:
        target = TARGETS[DEFAULT_TARGET[kind]]

    ts = request.context.timestamp
    if request.context.HasField("timestamp"):
        check_timestamp(ts, "context.timestamp", now_s, max_skew_s)
        request_ts = ts.seconds
    else:
        request_ts = int(now_s)

    if not 0.0 <= request.diversity < 1.0:  # also refuses NaN
        raise InvalidRequestError(f"diversity: must be in [0, 1), got {request.diversity}")

    return RankQuery(
        request_id=request.request_id or uuid.uuid4().hex,
        user_id=request.user_id,
        kind=kind,
        candidate_ids=tuple(c.id for c in request.candidates),
        target=target,
        top_k=request.top_k or n,
        request_ts=request_ts,
        device=request.context.device,
        disable_fallback=request.disable_fallback,
        diversity=float(request.diversity),
        keep_unavailable=request.keep_unavailable,
    )


MAX_FEEDBACK_EVENTS = 10_000
FEEDBACK_TYPES: dict[int, FeedbackType] = {
    pb.FEEDBACK_TYPE_CLICK: "click",
    pb.FEEDBACK_TYPE_PURCHASE: "purchase",
}


def parse_feedback(
    request: pb.FeedbackRequest, now_s: float, max_skew_s: float = 300.0
) -> list[FeedbackEvent]:
    """Validates a Feedback call; returns its events as the served-event log records them.

    Event timestamps follow the rules of a Rank request's (`check_timestamp`).

    Raises:
        InvalidRequestError: naming the first offending field (`events[2].type: ...`); then no
            event of the call is kept, so a caller can fix and resend the whole call.
    """
    check_count(len(request.events), "events", MAX_FEEDBACK_EVENTS)
    events: list[FeedbackEvent] = []
    for i, event in enumerate(request.events):
        _check_id(event.request_id, f"events[{i}].request_id")
        _check_id(event.candidate_id, f"events[{i}].candidate_id")
        kind = FEEDBACK_TYPES.get(event.type)
        if kind is None:
            raise InvalidRequestError(
                f"events[{i}].type: unknown feedback type {event.type}; "
                "expected FEEDBACK_TYPE_CLICK or FEEDBACK_TYPE_PURCHASE"
            )
        at = now_s
        if event.HasField("timestamp"):
            at = check_timestamp(event.timestamp, f"events[{i}].timestamp", now_s, max_skew_s)
        events.append(
            {
                "request_id": event.request_id,
                "candidate_id": event.candidate_id,
                "type": kind,
                "at": at,
            }
        )
    return events
