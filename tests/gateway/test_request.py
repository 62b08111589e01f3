"""Request validation: every bad field gets INVALID_ARGUMENT with a message naming it."""

from __future__ import annotations

import grpc
import pytest

from scoring.api.v1 import scoring_pb2 as pb
from scoring.core.errors import InvalidRequestError
from scoring.core.targets import CandidateKind
from scoring.gateway.request import MAX_ID_LENGTH, parse_rank_request

ITEM = pb.CANDIDATE_TYPE_ITEM
ACTIVITY = pb.CANDIDATE_TYPE_ACTIVITY


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


def test_context_timestamp_and_request_id_are_kept() -> None:
    req = request(request_id="abc", top_k=2)
    req.context.timestamp.seconds = 1_650_000_000
    query = parse_rank_request(req, 10, now_s=0)
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


def feedback_error(*events: pb.FeedbackEvent) -> str:
    from scoring.gateway.request import parse_feedback

    with pytest.raises(InvalidRequestError) as info:
        parse_feedback(pb.FeedbackRequest(events=events), now_s=1_700_000_000)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.message


def test_feedback_validation_names_the_field() -> None:
    from scoring.gateway.request import parse_feedback

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
