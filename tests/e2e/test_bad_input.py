"""Bad input against the real gateway process: property-based (hypothesis) over every RPC's fields.

Each request is also judged by an oracle, the request rules of docs/callers.md written out
here: a request that breaks one must be refused INVALID_ARGUMENT naming a broken field, and one
that breaks none must be answered, with a consistent response. Never UNKNOWN or INTERNAL, never
a hang (every call has a deadline), never a traceback in the details. The gateway fixture's
limits: 100 candidates a request, 64 requests and 2,000 candidates a batch.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.served_events import read_events
from scoring.core.targets import TARGETS
from scoring.gateway.process import health_status

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

MAX_CANDIDATES, MAX_BATCH_REQUESTS, MAX_BATCH_CANDIDATES = 100, 64, 2_000
MAX_ID, MAX_EVENTS, SKEW_S, EARLIEST_S = 256, 10_000, 300, 631_152_000  # 1990-01-01
ITEM, ACTIVITY = pb.CANDIDATE_TYPE_ITEM, pb.CANDIDATE_TYPE_ACTIVITY
KINDS = {ITEM: "item", ACTIVITY: "activity"}
DEADLINE_S = 30.0
RANK, BATCH, FEEDBACK = "Rank", "RankBatch", "Feedback"
REQUEST_TYPES: dict[str, type[Message]] = {
    RANK: pb.RankRequest,
    BATCH: pb.RankBatchRequest,
    FEEDBACK: pb.FeedbackRequest,
}
RESPONSE_TYPES: dict[str, type[Message]] = {
    RANK: pb.RankResponse,
    BATCH: pb.RankBatchResponse,
    FEEDBACK: pb.FeedbackResponse,
}
PROPERTY = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ITEMS = [f"i_{i:06d}" for i in range(150)]
ACTIVITIES = [f"a_{i:06d}" for i in range(30)]
ODD_IDS = [
    "", " ", "\t\n", "\u3000", "\u200b", "\x00", "é" * MAX_ID, "🙂" * (MAX_ID + 1),
    "x" * MAX_ID, "x" * (MAX_ID + 1), "i_000001 ", "I_000001", "\u202eevil", "../../etc",
]  # fmt: skip
odd_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # no lone surrogates
ids = st.one_of(st.sampled_from(ODD_IDS), odd_text)
users = st.one_of(st.sampled_from([f"u_{i:06d}" for i in range(0, 200, 7)]), ids)
enums = st.one_of(st.integers(0, 3), st.integers(-(2**31), 2**31 - 1))
SECONDS = [
    0, -1, 1, EARLIEST_S - 1, EARLIEST_S, 973_000_000, 1_323_435_600, 253_402_300_799,
    -62_135_596_800, 2**63 - 1, -(2**63), 2**31, 10**12,
]  # fmt: skip
valid_nanos = st.one_of(st.just(0), st.integers(0, 999_999_999))
bad_nanos = st.sampled_from([-1, 10**9, -(2**31), 2**31 - 1])
# Odd times: in Unix seconds, or ahead of the clock at the call (within the skew and beyond).
timestamps = st.one_of(
    st.tuples(st.just("at"), st.sampled_from(SECONDS), valid_nanos),
    st.tuples(st.just("at"), st.integers(-(2**63), 2**63 - 1), valid_nanos),
    st.tuples(
        st.just("in"), st.sampled_from([SKEW_S - 60, SKEW_S + 60, 86_400 * 365 * 50]), valid_nanos
    ),
    st.tuples(st.just("in"), st.sampled_from([-3600, 0]), bad_nanos),
)

# Times that must be accepted: unset, now, the recent past, an imported log's (2000, 2011).
usual_timestamps = st.one_of(
    st.none(),
    st.tuples(st.just("in"), st.sampled_from([-86_400 * 400, -3600, 0, 60]), valid_nanos),
    st.tuples(st.just("at"), st.sampled_from([973_000_000, 1_323_435_600]), valid_nanos),
)


def set_timestamp(message: Any, drawn: tuple[str, int, int] | None) -> None:
    """Sets a Timestamp field to a drawn time ("at" Unix seconds, or "in" seconds from now)."""
    if drawn is None:
        return
    how, seconds, ns = drawn
    message.seconds = int(time.time()) + seconds if how == "in" else seconds
    message.nanos = ns


# --- the oracle: the fields a request breaks (empty: it must be answered) ------------------


def _id_broken(value: str) -> bool:
    return not value.strip() or len(value) > MAX_ID


def _timestamp_broken(ts: Any) -> bool | None:
    """True when refused, False when accepted, None when too close to the skew limit to say."""
    if not 0 <= ts.nanos < 10**9 or ts.seconds < EARLIEST_S:
        return True
    ahead = ts.seconds + ts.nanos / 1e9 - time.time()
    if abs(ahead - SKEW_S) < 30:
        return None
    return ahead > SKEW_S


def rank_problems(req: pb.RankRequest) -> set[str] | None:
    """The fields `req` breaks; None when the example sits on a boundary (skipped)."""
    problems = set()
    if _id_broken(req.user_id):
        problems.add("user_id")
    if len(req.request_id) > MAX_ID:
        problems.add("request_id")
    n = len(req.candidates)
    if not 1 <= n <= MAX_CANDIDATES:
        problems.add("candidates")
    seen: set[str] = set()
    for i, c in enumerate(req.candidates):
        if _id_broken(c.id) or c.id in seen:
            problems.add(f"candidates[{i}].id")
        seen.add(c.id)
        if c.type not in KINDS or c.type != req.candidates[0].type:
            problems.add(f"candidates[{i}].type")
    if req.model:
        target = TARGETS.get(req.model)
        first = KINDS.get(req.candidates[0].type) if n else None
        if target is None or (first is not None and target.kind.value != first):
            problems.add("model")
    if req.context.HasField("timestamp"):
        broken = _timestamp_broken(req.context.timestamp)
        if broken is None:
            return None
        if broken:
            problems.add("context.timestamp")
    if not 0.0 <= req.diversity < 1.0:
        problems.add("diversity")
    return problems


def batch_problems(req: pb.RankBatchRequest) -> set[str] | None:
    problems = set()
    total = sum(len(r.candidates) for r in req.requests)
    if not 1 <= len(req.requests) <= MAX_BATCH_REQUESTS or total > MAX_BATCH_CANDIDATES:
        problems.add("requests")
    for i, item in enumerate(req.requests):
        sub = rank_problems(item)
        if sub is None:
            return None
        problems |= {f"requests[{i}].{field}" for field in sub}
    return problems


def feedback_problems(req: pb.FeedbackRequest) -> set[str] | None:
    problems = set()
    if not 1 <= len(req.events) <= MAX_EVENTS:
        problems.add("events")
    for i, item in enumerate(req.events):
        for name in ("request_id", "candidate_id"):
            if _id_broken(getattr(item, name)):
                problems.add(f"events[{i}].{name}")
        if item.type not in (pb.FEEDBACK_TYPE_CLICK, pb.FEEDBACK_TYPE_PURCHASE):
            problems.add(f"events[{i}].type")
        if item.HasField("timestamp"):
            broken = _timestamp_broken(item.timestamp)
            if broken is None:
                return None
            if broken:
                problems.add(f"events[{i}].timestamp")
    return problems


PROBLEMS: dict[str, Callable[[Any], set[str] | None]] = {
    RANK: rank_problems,
    BATCH: batch_problems,
    FEEDBACK: feedback_problems,
}


# --- what a valid answer looks like --------------------------------------------------------


def check_rank_response(req: pb.RankRequest, response: pb.RankResponse) -> None:
    asked = [c.id for c in req.candidates]
    returned = [c.id for c in response.candidates]
    filtered = [f.id for f in response.filtered]
    assert len(set(returned)) == len(returned), "each candidate at most once"
    assert set(returned) <= set(asked) and set(filtered) <= set(asked)
    assert not set(returned) & set(filtered)
    expected = len(asked) - len(filtered)
    if req.top_k:
        expected = min(expected, req.top_k)
    assert len(returned) == expected
    assert [c.rank for c in response.candidates] == list(range(1, len(returned) + 1))
    assert all(math.isfinite(c.score) for c in response.candidates)
    assert all(c.type == req.candidates[0].type for c in response.candidates)
    if req.diversity == 0:
        scores = [c.score for c in response.candidates]
        assert scores == sorted(scores, reverse=True)
    assert response.model_name in TARGETS
    assert response.request_id == (req.request_id or response.request_id)
    assert re.fullmatch(r"[0-9a-f]{32}", response.request_id) or req.request_id
    assert response.degraded == bool(response.degradations)


def check_response(method: str, req: Any, response: Any) -> None:
    if method == RANK:
        check_rank_response(req, response)
    elif method == BATCH:
        assert len(response.responses) == len(req.requests)
        for item, answer in zip(req.requests, response.responses, strict=True):
            check_rank_response(item, answer)
    else:
        assert response.accepted == len(req.events)


# --- the calls -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel(gateway: Any) -> Iterator[grpc.Channel]:
    """One channel for the module; afterwards the gateway still serves and logged no error."""
    log: Path = gateway.log_path
    seen = len(log.read_text())
    with grpc.insecure_channel(gateway.address) as channel:
        yield channel
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(gateway.address) == serving, "the gateway still serves"
    written = log.read_text()[seen:]
    assert "internal_error" not in written and "Traceback" not in written, written[-3000:]


def raw_call(
    channel: grpc.Channel, method: str, payload: bytes
) -> tuple[Any, grpc.RpcError | None]:
    """Sends `payload` as the method's request; (response message or None, error or None)."""
    call: Any = channel.unary_unary(f"/scoring.api.v1.RankingService/{method}")
    try:
        answer = call(payload, timeout=DEADLINE_S)
    except grpc.RpcError as error:
        return None, error
    return RESPONSE_TYPES[method].FromString(answer), None


def expect(channel: grpc.Channel, method: str, payload: bytes) -> None:
    """The property: sends `payload` and judges the answer against the oracle."""
    problems: set[str] | None = {"request"}
    try:
        req = REQUEST_TYPES[method].FromString(payload)
    except DecodeError:
        req = None
    else:
        problems = PROBLEMS[method](req)
    if problems is None:
        return  # within a few seconds of the clock-skew limit: either answer is right
    response, error = raw_call(channel, method, payload)
    event(f"{method}: " + ("answered" if error is None else error.code().name))  # statistics
    if error is None:
        assert not problems, f"{method} accepted a request that breaks {sorted(problems)}: {req}"
        check_response(method, req, response)
        return
    code, details = error.code(), error.details() or ""
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert "Traceback" not in details and 'File "' not in details, details
    field = details.split(":", 1)[0]
    assert field in problems, f"{details!r} names none of {sorted(problems)}"


class OneOdd:
    """Draws the fields of one message the usual way, but one of them (or none) odd: so that
    each broken rule is seen on its own, where a wrong answer cannot hide behind another."""

    def __init__(self, draw: st.DrawFn, fields: list[str | None]) -> None:
        self.draw = draw
        self.odd = draw(st.sampled_from(fields))

    def __call__(
        self, field: str, odd: st.SearchStrategy[Any], usual: st.SearchStrategy[Any]
    ) -> Any:
        return self.draw(odd if field == self.odd else usual)


@st.composite
def rank_requests(draw: st.DrawFn, large: bool = True) -> pb.RankRequest:
    """Well-formed requests (real users, ids of one kind) with a few fields made odd: ids
    (empty, blank, too long, odd unicode, duplicates), enum values, timestamps (far future,
    negative nanos), diversity (NaN, inf), top_k, model, and lists beyond the limit."""
    kind = draw(st.sampled_from([ITEM, ITEM, ACTIVITY]))
    pool = ITEMS if kind == ITEM else ACTIVITIES
    pick = OneOdd(
        draw,
        [None, None, "size", "candidate", "user_id", "model", "request_id"]
        + ["diversity", "timestamp", "timestamp"],
    )
    sizes = [0, MAX_CANDIDATES, MAX_CANDIDATES + 1, 1000] if large else [0]
    n = pick("size", st.sampled_from(sizes), st.integers(1, 12))
    start = draw(st.integers(0, len(pool) - 1))
    cand_ids = [pool[(start + j) % len(pool)] if j < len(pool) else f"new_{j}" for j in range(n)]
    types: list[int] = [kind] * n
    for _ in range(pick("candidate", st.integers(1, 2), st.just(0)) if n else 0):
        at = draw(st.integers(0, n - 1))
        change = draw(st.sampled_from(["id", "dup", "type"]))
        if change == "id":
            cand_ids[at] = draw(ids)
        elif change == "dup":
            cand_ids[at] = cand_ids[draw(st.integers(0, n - 1))]
        else:
            types[at] = draw(enums)
    req = pb.RankRequest(
        user_id=pick("user_id", users, st.sampled_from([f"u_{i:06d}" for i in range(200)])),
        candidates=[pb.Candidate(id=c, type=t) for c, t in zip(cand_ids, types, strict=True)],  # type: ignore[arg-type]
        top_k=draw(st.one_of(st.just(0), st.integers(0, 5), st.just(2**32 - 1))),
        model=pick(
            "model",
            st.sampled_from(["activity_ranker", "nope", "\u0000"]),
            st.sampled_from(["", "item_ranker"] if kind == ITEM else ["", "activity_ranker"]),
        ),
        request_id=pick("request_id", ids, st.just("")),
        disable_fallback=draw(st.booleans()),
        keep_unavailable=draw(st.booleans()),
        diversity=pick(
            "diversity", st.floats(width=32), st.one_of(st.just(0.0), st.floats(0.0, 0.5, width=32))
        ),
    )
    req.context.device = draw(st.one_of(st.just(""), odd_text))
    set_timestamp(req.context.timestamp, pick("timestamp", timestamps, usual_timestamps))
    return req


@st.composite
def batches(draw: st.DrawFn) -> pb.RankBatchRequest:
    """Small batches of odd requests, and batches beyond the request and candidate limits
    (refused before any work)."""
    shape = draw(st.sampled_from(["odd", "odd", "clean", "clean", "many", "large"]))
    if shape == "odd":
        items = draw(st.lists(rank_requests(large=False), min_size=0, max_size=3))
    elif shape == "clean":
        items = [
            pb.RankRequest(
                user_id=f"u_{draw(st.integers(0, 199)):06d}",
                candidates=[pb.Candidate(id=i, type=ITEM) for i in ITEMS[start : start + size]],
                top_k=draw(st.integers(0, 5)),
            )
            for start, size in draw(
                st.lists(st.tuples(st.integers(0, 140), st.integers(1, 10)), min_size=1, max_size=8)
            )
        ]
    else:
        count, size = (MAX_BATCH_REQUESTS + 1, 1) if shape == "many" else (MAX_BATCH_REQUESTS, 40)
        template = pb.RankRequest(
            user_id="u_000001", candidates=[pb.Candidate(id=i, type=ITEM) for i in ITEMS[:size]]
        )
        items = [template] * count
    return pb.RankBatchRequest(requests=items)


@st.composite
def feedback_requests(draw: st.DrawFn) -> pb.FeedbackRequest:
    """Events of odd ids, enum values and timestamps (and calls without events)."""
    events = []
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 4]))):
        pick = OneOdd(draw, [None, None, "request_id", "candidate_id", "type", "timestamp"])
        item = pb.FeedbackEvent(
            request_id=pick("request_id", ids, st.sampled_from(["r_1", "0" * 32])),
            candidate_id=pick("candidate_id", ids, st.sampled_from(ITEMS[:3])),
            type=pick("type", enums, st.sampled_from([1, 2])),
        )
        set_timestamp(item.timestamp, pick("timestamp", timestamps, usual_timestamps))
        events.append(item)
    return pb.FeedbackRequest(events=events)


@settings(PROPERTY, max_examples=100)
@given(req=rank_requests())
def test_rank_answers_or_names_the_bad_field(channel: grpc.Channel, req: pb.RankRequest) -> None:
    expect(channel, RANK, req.SerializeToString())


@settings(PROPERTY, max_examples=60)
@given(req=batches())
def test_rank_batch_answers_or_names_the_bad_field(
    channel: grpc.Channel, req: pb.RankBatchRequest
) -> None:
    expect(channel, BATCH, req.SerializeToString())


@settings(PROPERTY, max_examples=100)
@given(req=feedback_requests())
def test_feedback_answers_or_names_the_bad_field(
    channel: grpc.Channel, req: pb.FeedbackRequest
) -> None:
    expect(channel, FEEDBACK, req.SerializeToString())


@settings(PROPERTY, max_examples=60)
@given(method=st.sampled_from([RANK, BATCH, FEEDBACK]), payload=st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_are_refused(
    channel: grpc.Channel, method: str, payload: bytes
) -> None:
    expect(channel, method, payload)


# --- named cases ---------------------------------------------------------------------------


def test_a_far_future_context_timestamp_is_refused(channel: grpc.Channel) -> None:
    # Year 9999 turned every stored feature into "expired": all candidates unknown, identical
    # scores, and `degraded` false.
    req = pb.RankRequest(user_id="u_000001", candidates=[pb.Candidate(id="i_000001", type=ITEM)])
    req.context.timestamp.seconds = 253_402_300_799
    _, error = raw_call(channel, RANK, req.SerializeToString())
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("context.timestamp: 9999-12-31T23:59:59Z is ")
    req.context.timestamp.seconds, req.context.timestamp.nanos = int(time.time()), -1
    _, error = raw_call(channel, RANK, req.SerializeToString())
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "context.timestamp: nanos must be in [0, 999999999], got -1"


def test_undecodable_and_deeply_nested_messages_are_invalid_argument(
    channel: grpc.Channel,
) -> None:
    # Unknown groups nested 200 deep (beyond protobuf's recursion limit), and a truncated field:
    # gRPC answered UNKNOWN naming the parser's exception class.
    for payload in (b"\x7b" * 200 + b"\x7c" * 200, b"\x0a\x10abc"):
        for method in (RANK, BATCH, FEEDBACK):
            _, error = raw_call(channel, method, payload)
            assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
            assert (error.details() or "").startswith("request: not a valid message")


def test_an_oversize_message_is_resource_exhausted(channel: grpc.Channel) -> None:
    ids = [f"{i:0{MAX_ID}d}" for i in range(21_000)]  # 5.5 MB, over gRPC's 4 MiB
    req = pb.RankRequest(
        user_id="u_000001", candidates=[pb.Candidate(id=i, type=ITEM) for i in ids]
    )
    _, error = raw_call(channel, RANK, req.SerializeToString())
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (error.details() or "")


def test_a_batch_over_its_candidate_total_is_refused_with_the_figures(
    channel: grpc.Channel,
) -> None:
    template = pb.RankRequest(
        user_id="u_000001", candidates=[pb.Candidate(id=i, type=ITEM) for i in ITEMS[:40]]
    )
    batch = pb.RankBatchRequest(requests=[template] * MAX_BATCH_REQUESTS)
    _, error = raw_call(channel, BATCH, batch.SerializeToString())
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "requests: 2560 candidates in all exceed the batch maximum of 2000; split the batch"
    )


def test_feedback_for_an_unserved_request_is_accepted_flagged_and_counted(
    gateway: Any, channel: grpc.Channel
) -> None:
    url = f"http://127.0.0.1:{gateway.settings.gateway.metrics_port}/metrics"

    def unmatched() -> float:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        found = re.search(
            r'^scoring_feedback_unmatched_total\{type="purchase"\} (\S+)$', text, re.M
        )
        return float(found.group(1)) if found else 0.0

    stub = pb_grpc.RankingServiceStub(channel)
    served = stub.Rank(
        pb.RankRequest(user_id="u_000002", candidates=[pb.Candidate(id="i_000002", type=ITEM)]),
        timeout=DEADLINE_S,
    )
    before = unmatched()
    purchase = pb.FEEDBACK_TYPE_PURCHASE
    events = [
        pb.FeedbackEvent(request_id=served.request_id, candidate_id="i_000002", type=purchase),
        pb.FeedbackEvent(request_id="never-served-0042", candidate_id="i_000002", type=purchase),
    ]
    assert stub.Feedback(pb.FeedbackRequest(events=events), timeout=DEADLINE_S).accepted == 2
    assert unmatched() == before + 1

    # The event log records which of the two matched a request this gateway served.
    wanted = {served.request_id, "never-served-0042"}
    events_dir = gateway.settings.gateway.events_dir
    deadline = time.monotonic() + 20
    logged: dict[str, bool] = {}
    while set(logged) != wanted and time.monotonic() < deadline:
        logged = {
            e["request_id"]: e.get("matched", True)
            for e in read_events(events_dir, "feedback")
            if e["request_id"] in wanted
        }
        time.sleep(0.1)
    assert logged == {served.request_id: True, "never-served-0042": False}, json.dumps(logged)
