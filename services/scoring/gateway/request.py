"""Validates a RankRequest and turns it into a domain query; errors name the field."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from scoring.api.v1 import scoring_pb2 as pb
from scoring.core.errors import InvalidRequestError
from scoring.core.served_events import FeedbackEvent, FeedbackType
from scoring.core.targets import DEFAULT_TARGET, TARGETS, CandidateKind, Target

MAX_ID_LENGTH = 256

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


def parse_rank_request(request: pb.RankRequest, max_candidates: int, now_s: float) -> RankQuery:
    """Validates `request`.

    Args:
        request: the wire request.
        max_candidates: the configured maximum number of candidates.
        now_s: the server clock (Unix seconds), used when the context has no timestamp.

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
        if ts.seconds <= 0:
            raise InvalidRequestError("context.timestamp: must be after 1970-01-01")
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


def parse_feedback(request: pb.FeedbackRequest, now_s: float) -> list[FeedbackEvent]:
    """Validates a Feedback call; returns its events as the served-event log records them.

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
            if event.timestamp.seconds <= 0:
                raise InvalidRequestError(f"events[{i}].timestamp: must be after 1970-01-01")
            at = event.timestamp.seconds + event.timestamp.nanos / 1e9
        events.append(
            {
                "request_id": event.request_id,
                "candidate_id": event.candidate_id,
                "type": kind,
                "at": at,
            }
        )
    return events
