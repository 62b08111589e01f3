"""Validates a RankRequest and turns it into a domain query; errors name the field."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from scoring.api.v1 import scoring_pb2 as pb
from scoring.core.errors import InvalidRequestError
from scoring.core.served_events import FeedbackEvent, FeedbackType
from scoring.core.targets import BASKET_TARGET, DEFAULT_TARGET, TARGETS, CandidateKind, Target

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
# The candidates a cart without candidates may bring per cart item, for a batch's bounds: the
# co-purchase neighbours the cart's feature service keeps per item (cp_id_00..29).
PROPOSED_PER_CART_ITEM = 30
DEFAULT_MAX_CART_ITEMS = 50  # GatewaySettings.max_cart_items

KIND_OF_TYPE: dict[int, CandidateKind] = {
    pb.CANDIDATE_TYPE_ITEM: CandidateKind.ITEM,
    pb.CANDIDATE_TYPE_ACTIVITY: CandidateKind.ACTIVITY,
    pb.CANDIDATE_TYPE_BUNDLE: CandidateKind.BUNDLE,
}
TYPE_OF_KIND: dict[CandidateKind, int] = {kind: t for t, kind in KIND_OF_TYPE.items()}
KNOWN_TYPES = " or ".join(str(pb.CandidateType.Name(t)) for t in KIND_OF_TYPE)


@dataclass(frozen=True, slots=True)
class RankQuery:
    """A validated Rank request.

    Attributes:
        cart_item_ids: the cart's items (complete-the-basket); empty without a cart.
        propose: the request has a cart and no candidates: the gateway proposes them (the cart's
            co-purchase neighbours); `candidate_ids` is empty until then, and `top_k` 0 means
            all of them.
    """

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
    cart_item_ids: tuple[str, ...] = ()
    propose: bool = False


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


def _expected_candidates(request: pb.RankRequest, max_candidates: int) -> int:
    """The candidates a request will rank: its own, or for a cart without candidates, as many
    as the gateway may propose (at most `PROPOSED_PER_CART_ITEM` a cart item)."""
    if request.candidates or not request.cart_item_ids:
        return len(request.candidates)
    return min(max_candidates, PROPOSED_PER_CART_ITEM * len(request.cart_item_ids))


def check_batch_size(
    request: pb.RankBatchRequest, max_candidates: int, max_request_candidates: int | None = None
) -> None:
    """Checks that a batch's candidates, all requests together, and its answer stay bounded.

    A request with a cart and no candidates counts with the candidates the gateway may propose
    for it (see `_expected_candidates`).

    Args:
        max_candidates: the batch's maximum (all its requests together).
        max_request_candidates: one request's maximum (GatewaySettings.max_candidates), which
            bounds what is proposed for a cart; `max_candidates` when None.

    Raises:
        InvalidRequestError: naming `requests`, with the batch's figures and the limit.
    """
    per_request = max_candidates if max_request_candidates is None else max_request_candidates
    total = sum(_expected_candidates(item, per_request) for item in request.requests)
    proposed = total - sum(len(item.candidates) for item in request.requests)
    if total > max_candidates:
        raise InvalidRequestError(
            f"requests: {total} candidates in all"
            + (f" ({proposed} of them what carts without candidates may bring)" if proposed else "")
            + f" exceed the batch maximum of {max_candidates}; split the batch"
        )
    # The answer repeats each id next to its score, rank and reasons.
    answer = request.ByteSize() + ANSWER_BYTES_PER_CANDIDATE * total
    if answer > MAX_BATCH_ANSWER_BYTES:
        raise InvalidRequestError(
            f"requests: the answer would take about {answer / 2**20:.1f} MiB "
            f"({total} candidates), over the {MAX_BATCH_ANSWER_BYTES / 2**20:.0f} MiB a batch "
            "may return; split the batch"
        )


def check_cart(cart_item_ids: Sequence[str], max_cart_items: int) -> tuple[str, ...]:
    """The cart's item ids once each is a valid id and none repeats.

    Raises:
        InvalidRequestError: naming `cart_item_ids` (too many) or the item
            (`cart_item_ids[3]: must not be empty`, `... duplicate of cart_item_ids[1] ...`).
    """
    n = len(cart_item_ids)
    if n > max_cart_items:
        raise InvalidRequestError(
            f"cart_item_ids: {n} cart items exceed the maximum of {max_cart_items}"
        )
    seen: dict[str, int] = {}
    for i, item_id in enumerate(cart_item_ids):
        _check_id(item_id, f"cart_item_ids[{i}]")
        if item_id in seen:
            raise InvalidRequestError(
                f"cart_item_ids[{i}]: duplicate of cart_item_ids[{seen[item_id]}] ({item_id!r})"
            )
        seen[item_id] = i
    return tuple(cart_item_ids)


def _candidates(request: pb.RankRequest, max_candidates: int, has_cart: bool) -> CandidateKind:
    """Checks the candidates (ids, one known type, no duplicates); returns their kind (items
    for a cart without candidates)."""
    n = len(request.candidates)
    if n == 0 and has_cart:
        return CandidateKind.ITEM
    if n == 0:
        raise InvalidRequestError(
            "candidates: at least one candidate is required (or a cart, cart_item_ids, to "
            "propose items for)"
        )
    check_count(n, "candidates", max_candidates)
    first_type = request.candidates[0].type
    seen: dict[str, int] = {}
    for i, candidate in enumerate(request.candidates):
        _check_id(candidate.id, f"candidates[{i}].id")
        if candidate.type not in KIND_OF_TYPE:
            raise InvalidRequestError(
                f"candidates[{i}].type: unknown candidate type {_type_name(candidate.type)}; "
                f"expected {KNOWN_TYPES}"
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
    return KIND_OF_TYPE[first_type]


def _target(request: pb.RankRequest, kind: CandidateKind, has_cart: bool) -> Target:
    """The request's target: its `model`, else the default of its kind (with a cart: the
    basket target); a cart needs a target that reads one."""
    if has_cart and kind is not CandidateKind.ITEM:
        raise InvalidRequestError(
            f"cart_item_ids: a cart goes with item candidates (or none, to propose items), "
            f"not {kind.value} candidates"
        )
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
        target = TARGETS[BASKET_TARGET if has_cart else DEFAULT_TARGET[kind]]
    if has_cart and target.cart_feature_service is None:
        basket = [t.name for t in TARGETS.values() if t.cart_feature_service is not None]
        raise InvalidRequestError(
            f"cart_item_ids: model {target.name} reads no cart; send the cart to "
            f"{' or '.join(basket)} (the default with a cart), or send no cart"
        )
    return target


def parse_rank_request(
    request: pb.RankRequest,
    max_candidates: int,
    now_s: float,
    max_skew_s: float = 300.0,
    max_cart_items: int = DEFAULT_MAX_CART_ITEMS,
) -> RankQuery:
    """Validates `request`.

    Args:
        request: the wire request.
        max_candidates: the configured maximum number of candidates.
        now_s: the server clock (Unix seconds), used when the context has no timestamp.
        max_skew_s: how far ahead of `now_s` the context's timestamp may be.
        max_cart_items: the configured maximum number of cart items.

    Raises:
        InvalidRequestError: with a message naming the offending field.
    """
    _check_id(request.user_id, "user_id")
    if len(request.request_id) > MAX_ID_LENGTH:
        raise InvalidRequestError(f"request_id: longer than {MAX_ID_LENGTH} characters")
    cart = check_cart(request.cart_item_ids, max_cart_items)
    kind = _candidates(request, max_candidates, bool(cart))
    target = _target(request, kind, bool(cart))
    n = len(request.candidates)

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
        cart_item_ids=cart,
        propose=n == 0,
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
