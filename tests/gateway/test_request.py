"""Request validation: every bad field gets INVALID_ARGUMENT with a message naming it."""

from __future__ import annotations

import grpc
import pytest

from scoring.api.v1 import scoring_pb2 as pb
from scoring.core.errors import InvalidRequestError
from scoring.core.targets import BASKET_TARGET, CandidateKind
from scoring.gateway.request import (
    MAX_BATCH_ANSWER_BYTES,
    MAX_ID_LENGTH,
    PROPOSED_PER_CART_ITEM,
    check_batch_size,
    parse_feedback,
    parse_rank_request,
)

ITEM = pb.CANDIDATE_TYPE_ITEM
ACTIVITY = pb.CANDIDATE_TYPE_ACTIVITY
BUNDLE = pb.CANDIDATE_TYPE_BUNDLE


def request(user: str = "u_1", types: list[int] | None = None, **kw: object) -> pb.RankRequest:
    types = [ITEM, ITEM, ITEM] if types is None else types
    cands = [pb.Candidate(id=f"c{i}", type=t) for i, t in enumerate(types)]  # type: ignore[arg-type]
    return pb.RankRequest(user_id=user, candidates=cands, **kw)  # type: ignore[arg-type]


def error_of(req: pb.RankRequest, max_candidates: int = 10) -> str:
    with pytest.raises(InvalidRequestError) as info:
        parse_rank_request(req, max_candidates, now_s=1_700_000_000)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.message


def test_valid_request_defaults() -> None:
    query = parse_rank_request(request(), 10, now_s=1_700_000_000.7)
    assert query.kind is CandidateKind.ITEM
    assert query.target.name == "item_ranker"
    assert query.candidate_ids == ("c0", "c1", "c2")
    assert query.top_k == 3
    assert query.request_ts == 1_700_000_000
    assert len(query.request_id) == 32


def test_activity_candidates_pick_the_activity_target() -> None:
    query = parse_rank_request(request(types=[ACTIVITY]), 10, now_s=0)
    assert query.target.name == "activity_ranker"


def test_bundle_candidates_pick_the_bundle_target() -> None:
    query = parse_rank_request(request(types=[BUNDLE, BUNDLE]), 10, now_s=0)
    assert (query.kind, query.target.name) == (CandidateKind.BUNDLE, "bundle_ranker")
    assert error_of(request(types=[BUNDLE], model="item_ranker")).startswith(
        "model: item_ranker ranks item candidates, not bundle candidates"
    )
    assert error_of(request(types=[ITEM, BUNDLE])).startswith(
        "candidates[1].type: CANDIDATE_TYPE_BUNDLE differs from candidates[0]"
    )
    assert error_of(request(types=[9])) == (
        "candidates[0].type: unknown candidate type 9; expected CANDIDATE_TYPE_ITEM or "
        "CANDIDATE_TYPE_ACTIVITY or CANDIDATE_TYPE_BUNDLE"
    )


def cart_request(cart: list[str], types: list[int] | None = None, **kw: object) -> pb.RankRequest:
    req = request("u_1", types, **kw)
    req.cart_item_ids.extend(cart)
    return req


def cart_error(req: pb.RankRequest, max_cart_items: int = 5) -> str:
    with pytest.raises(InvalidRequestError) as info:
        parse_rank_request(req, 10, now_s=NOW, max_cart_items=max_cart_items)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.message


def test_item_candidates_with_a_cart_go_to_the_basket_target() -> None:
    query = parse_rank_request(cart_request(["x", "y"]), 10, now_s=NOW, max_cart_items=5)
    assert query.target.name == BASKET_TARGET
    assert query.target.cart_feature_service == "basket_cart_v1"
    assert query.cart_item_ids == ("x", "y")
    assert query.candidate_ids == ("c0", "c1", "c2") and not query.propose
    # Without a cart: the item ranker, as before; the basket target may still be asked for.
    assert parse_rank_request(request(), 10, now_s=NOW).target.name == "item_ranker"
    asked = parse_rank_request(request(model=BASKET_TARGET), 10, now_s=NOW)
    assert asked.target.name == BASKET_TARGET and asked.cart_item_ids == ()


def test_a_cart_without_candidates_asks_for_proposals() -> None:
    query = parse_rank_request(cart_request(["x"], types=[], top_k=3), 10, now_s=NOW)
    assert query.propose and query.candidate_ids == ()
    assert (query.kind, query.target.name, query.top_k) == (CandidateKind.ITEM, BASKET_TARGET, 3)
    assert parse_rank_request(cart_request(["x"], types=[]), 10, now_s=NOW).top_k == 0
    # Neither candidates nor a cart: still refused.
    assert error_of(request(types=[])).startswith("candidates: at least one candidate")


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (cart_request(["a", "b", "", "d"]), "cart_item_ids[2]: must not be empty"),
        (cart_request(["a", "  "]), "cart_item_ids[1]: must not be empty"),
        (
            cart_request(["a", "x" * (MAX_ID_LENGTH + 1)]),
            f"cart_item_ids[1]: longer than {MAX_ID_LENGTH} characters",
        ),
        (
            cart_request(["a", "b", "c", "b"]),
            "cart_item_ids[3]: duplicate of cart_item_ids[1] ('b')",
        ),
        (
            cart_request([f"i{k}" for k in range(6)]),
            "cart_item_ids: 6 cart items exceed the maximum of 5",
        ),
        (
            cart_request(["a"], types=[ACTIVITY]),
            "cart_item_ids: a cart goes with item candidates (or none, to propose items), "
            "not activity candidates",
        ),
        (
            cart_request(["a"], types=[BUNDLE, BUNDLE]),
            "cart_item_ids: a cart goes with item candidates (or none, to propose items), "
            "not bundle candidates",
        ),
        (
            cart_request(["a"], model="item_ranker"),
            "cart_item_ids: model item_ranker reads no cart; send the cart to basket_completer "
            "(the default with a cart), or send no cart",
        ),
        (
            cart_request(["a"], types=[], model="bundle_ranker"),
            "model: bundle_ranker ranks bundle candidates, not item candidates",
        ),
    ],
)
def test_bad_carts_are_named(req: pb.RankRequest, message: str) -> None:
    assert cart_error(req) == message


def test_context_timestamp_and_request_id_are_kept() -> None:
    req = request(request_id="abc", top_k=2)
    req.context.timestamp.seconds = 1_650_000_000
    query = parse_rank_request(req, 10, now_s=1_700_000_000)
    assert (query.request_id, query.top_k, query.request_ts) == ("abc", 2, 1_650_000_000)


@pytest.mark.parametrize(
    ("req", "prefix"),
    [
        (request(user=""), "user_id: must not be empty"),
        (request(user="   "), "user_id: must not be empty"),
        (request(user="u" * (MAX_ID_LENGTH + 1)), "user_id: longer than"),
        (request(types=[]), "candidates: at least one"),
        (
            request(types=[ITEM] * 11),
            "candidates: 11 candidates exceed the maximum of 10",
        ),
        (request(types=[ITEM, 7]), "candidates[1].type: unknown candidate type 7"),
        (
            request(types=[0]),
            "candidates[0].type: unknown candidate type CANDIDATE_TYPE_UNSPECIFIED",
        ),
        (request(types=[ITEM, ACTIVITY]), "candidates[1].type: CANDIDATE_TYPE_ACTIVITY differs"),
        (request(model="nope"), "model: unknown model target 'nope'"),
        (request(model="activity_ranker"), "model: activity_ranker ranks activity candidates"),
    ],
)
def test_bad_fields_are_named(req: pb.RankRequest, prefix: str) -> None:
    assert error_of(req).startswith(prefix)


def test_empty_and_duplicate_candidate_ids() -> None:
    req = request()
    req.candidates[1].id = ""
    assert error_of(req) == "candidates[1].id: must not be empty"
    req = request()
    req.candidates[2].id = "c0"
    assert error_of(req).startswith("candidates[2].id: duplicate of candidates[0]")


def test_bad_timestamp() -> None:
    req = request()
    req.context.timestamp.seconds = -5
    assert error_of(req).startswith("context.timestamp:")


NOW = 1_700_000_000  # the server clock of these tests: 2023-11-14T22:13:20Z


def context_error(seconds: int, nanos: int = 0, max_skew_s: float = 300.0) -> str:
    req = request()
    req.context.timestamp.seconds = seconds
    req.context.timestamp.nanos = nanos
    with pytest.raises(InvalidRequestError) as info:
        parse_rank_request(req, 10, now_s=NOW, max_skew_s=max_skew_s)
    return info.value.message


def test_a_far_future_context_timestamp_is_refused() -> None:
    # Year 9999: every stored value would count as expired (all candidates unknown).
    assert context_error(253_402_300_799) == (
        "context.timestamp: 9999-12-31T23:59:59Z is 251702300799 s ahead of the server clock "
        "(2023-11-14T22:13:20Z); at most 300 s of clock skew is accepted"
    )
    assert context_error(NOW + 301).startswith("context.timestamp: 2023-11-14T22:18:21Z is 301 s")
    assert context_error(NOW + 3600, max_skew_s=60).endswith(
        "at most 60 s of clock skew is accepted"
    )
    # Beyond datetime's range (year 10000 on): still named, no OverflowError.
    assert context_error(2**62).startswith(f"context.timestamp: {2**62} s after 1970-01-01 is")


def test_context_timestamp_nanos_and_early_seconds_are_refused() -> None:
    for nanos in (-1, 1_000_000_000, -(2**31)):
        assert context_error(NOW, nanos) == (
            f"context.timestamp: nanos must be in [0, 999999999], got {nanos}"
        )
    assert context_error(1).startswith(
        "context.timestamp: 1970-01-01T00:00:01Z is before 1990-01-01T00:00:00Z"
    )


def test_past_and_slightly_skewed_timestamps_are_accepted() -> None:
    # Ranking an imported log as of its time is a feature (scoring rank --at 2011-12-09T13:00).
    for seconds in (1_323_435_600, 973_000_000, NOW + 300):
        req = request()
        req.context.timestamp.seconds = seconds
        req.context.timestamp.nanos = 999_999_999 if seconds < NOW else 0
        assert parse_rank_request(req, 10, now_s=NOW).request_ts == seconds


def batch(n_requests: int, n_candidates: int, id_length: int = 8) -> pb.RankBatchRequest:
    return pb.RankBatchRequest(
        requests=[
            pb.RankRequest(
                user_id="u",
                candidates=[
                    pb.Candidate(id=f"{c:0{id_length}d}", type=ITEM) for c in range(n_candidates)
                ],
            )
            for _ in range(n_requests)
        ]
    )


def test_a_batch_caps_its_candidates_in_all_and_its_answer() -> None:
    check_batch_size(batch(10, 1000), 10_000)
    with pytest.raises(InvalidRequestError) as info:
        check_batch_size(batch(64, 1000), 10_000)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == (
        "requests: 64000 candidates in all exceed the batch maximum of 10000; split the batch"
    )
    # Long ids: the count is within the cap, the answer would not fit a client's 4 MiB.
    with pytest.raises(InvalidRequestError) as info:
        check_batch_size(batch(10, 1000, id_length=MAX_ID_LENGTH), 10_000)
    assert info.value.message.startswith("requests: the answer would take about 3.7 MiB")
    assert MAX_BATCH_ANSWER_BYTES < 4 * 1024 * 1024


def test_a_batch_counts_what_its_carts_may_bring() -> None:
    carts = pb.RankBatchRequest(
        requests=[pb.RankRequest(user_id="u", cart_item_ids=["a", "b"]) for _ in range(40)]
    )
    # Each cart of 2 items may bring 2 x PROPOSED_PER_CART_ITEM candidates (at most a request's
    # maximum): 40 x 60 = 2400.
    check_batch_size(carts, 2_400, max_request_candidates=1000)
    with pytest.raises(InvalidRequestError) as info:
        check_batch_size(carts, 2_000, max_request_candidates=1000)
    assert info.value.message == (
        "requests: 2400 candidates in all (2400 of them what carts without candidates may "
        "bring) exceed the batch maximum of 2000; split the batch"
    )
    assert PROPOSED_PER_CART_ITEM * 2 == 60
    check_batch_size(carts, 2_000, max_request_candidates=50)  # 40 x 50


def feedback_error(*events: pb.FeedbackEvent) -> str:
    with pytest.raises(InvalidRequestError) as info:
        parse_feedback(pb.FeedbackRequest(events=events), now_s=1_700_000_000)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.message


def test_feedback_validation_names_the_field() -> None:
    click = pb.FEEDBACK_TYPE_CLICK
    assert feedback_error() == "events: at least one event is required"
    assert feedback_error(pb.FeedbackEvent(candidate_id="c", type=click)).startswith(
        "events[0].request_id: must not be empty"
    )
    ok = pb.FeedbackEvent(request_id="r", candidate_id="c", type=click)
    assert feedback_error(ok, pb.FeedbackEvent(request_id="r", type=click)).startswith(
        "events[1].candidate_id"
    )
    assert "events[1].type: unknown feedback type 0" in feedback_error(
        ok, pb.FeedbackEvent(request_id="r", candidate_id="c")
    )
    bad_ts = pb.FeedbackEvent(request_id="r", candidate_id="c", type=click)
    bad_ts.timestamp.seconds = -5
    assert feedback_error(bad_ts).startswith("events[0].timestamp")
    (event,) = parse_feedback(pb.FeedbackRequest(events=[ok]), now_s=123.0)
    assert event == {"request_id": "r", "candidate_id": "c", "type": "click", "at": 123.0}


def test_feedback_timestamps_follow_the_context_rules() -> None:
    click = pb.FEEDBACK_TYPE_CLICK
    ok = pb.FeedbackEvent(request_id="r", candidate_id="c", type=click)
    late = pb.FeedbackEvent(request_id="r", candidate_id="c", type=click)
    late.timestamp.seconds = 253_402_300_799
    assert feedback_error(ok, late).startswith("events[1].timestamp: 9999-12-31T23:59:59Z is ")
    negative = pb.FeedbackEvent(request_id="r", candidate_id="c", type=click)
    negative.timestamp.seconds, negative.timestamp.nanos = 1_600_000_000, -5
    assert feedback_error(negative) == (
        "events[0].timestamp: nanos must be in [0, 999999999], got -5"
    )
    past = pb.FeedbackEvent(request_id="r", candidate_id="c", type=click)
    past.timestamp.seconds, past.timestamp.nanos = 1_600_000_000, 500_000_000
    (event,) = parse_feedback(pb.FeedbackRequest(events=[past]), now_s=1_700_000_000)
    assert event["at"] == 1_600_000_000.5
