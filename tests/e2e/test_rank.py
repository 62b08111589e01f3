"""A Rank request through the whole real path: Feast -> gateway -> Triton -> ranked answer."""

from __future__ import annotations

import time
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.client import RankingClient
from scoring.core.contract import contract_from_store
from scoring.core.targets import TARGETS, CandidateKind
from scoring.gateway.process import health_status
from scoring.trainer.export import list_versions, read_manifest

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

NOW = int(time.time())


def direct_outputs(
    repo: Any, model_repository: Any, target_name: str, user: str, ids: list[str], ts: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Scores and per-group contributions computed by the TorchScript file on features read
    straight from Feast."""
    target = TARGETS[target_name]
    store = repo.store()
    contract = contract_from_store(store, target.feature_service)
    rows = [{"user_id": user, target.join_key: cid, "request_ts": ts} for cid in ids]
    online = store.get_online_features(
        features=store.get_feature_service(target.feature_service),
        entity_rows=rows,
        full_feature_names=True,
    ).to_dict()

    # The contract's model input: values (vectors expanded, defaults where missing), then one
    # 0/1 missing indicator per feature; here rebuilt by hand from Feast's own online answer.
    def absent(v: Any) -> bool:  # None, or NaN stored for a null
        return v is None or (isinstance(v, float) and np.isnan(v))

    columns: list[np.ndarray] = []
    indicators: list[np.ndarray] = []
    for f in contract.features:
        values = online[f.ref]
        if f.is_vector:
            vectors = [np.full(f.length, f.default) if absent(v) else np.asarray(v) for v in values]
            columns.extend(np.array(vectors, dtype=np.float64).T)
        else:
            columns.append(np.array([f.default if absent(v) else float(v) for v in values]))
        indicators.append(np.array([float(absent(v)) for v in values]))
    matrix = np.ascontiguousarray(np.array([*columns, *indicators], dtype=np.float32).T)
    assert matrix.shape[1] == contract.width
    version = str(list_versions(model_repository / target_name)[-1])
    model = torch.jit.load(str(model_repository / target_name / version / "model.pt"))
    with torch.no_grad():
        outputs = model(torch.from_numpy(matrix))
    # The model returns (score__0, contrib__1[, purchase__2]); the ranking score is the first.
    assert isinstance(outputs, tuple)
    return outputs[0].numpy().ravel(), outputs[1].numpy(), version


@pytest.mark.parametrize(
    ("kind", "target", "ids"),
    [
        (CandidateKind.ITEM, "item_ranker", [f"i_{i:06d}" for i in range(0, 150, 3)]),
        (CandidateKind.ACTIVITY, "activity_ranker", [f"a_{i:06d}" for i in range(30)]),
    ],
)
def test_scores_equal_torchscript_on_feast_features(
    gateway: Any,
    feature_repo_ready: Any,
    model_repository: Any,
    kind: CandidateKind,
    target: str,
    ids: list[str],
) -> None:
    user = "u_000007"
    with RankingClient(gateway.address) as client:
        response = client.rank(user, ids, kind, timestamp_s=NOW, keep_unavailable=True)

    expected, contributions, version = direct_outputs(
        feature_repo_ready, model_repository, target, user, ids, NOW
    )
    got = {c.id: c.score for c in response.candidates}
    assert sorted(got) == sorted(ids), "every candidate is answered exactly once"
    diff = np.abs(np.array([got[i] for i in ids]) - expected).max()
    assert diff <= 1e-5, f"gateway vs direct TorchScript max abs diff {diff}"
    scores = [c.score for c in response.candidates]
    assert scores == sorted(scores, reverse=True), "sorted by score, best first"
    assert [c.rank for c in response.candidates] == list(range(1, len(ids) + 1))
    assert response.model_name == target
    assert response.model_version == version
    assert response.feature_service == TARGETS[target].feature_service
    assert response.request_id
    assert not response.unknown_user
    assert not any(c.unknown for c in response.candidates)
    assert "user_behavior" in response.feature_age_s
    assert all(0 <= age < 86400 * 400 for age in response.feature_age_s.values())
    assert len(set(scores)) > len(ids) // 2, "scores depend on the candidate"

    # Reasons: each candidate's three feature groups of largest absolute contribution, with
    # the model's own contributions, largest first.
    groups = read_manifest(model_repository / target, int(version))["model"]["feature_groups"]
    position = {cid: i for i, cid in enumerate(ids)}
    for candidate in response.candidates:
        row = contributions[position[candidate.id]]
        assert len(candidate.reasons) == 3, candidate.id
        assert len({r.group for r in candidate.reasons}) == 3
        for reason in candidate.reasons:
            assert reason.contribution == pytest.approx(row[groups.index(reason.group)], abs=1e-5)
        magnitudes = [abs(r.contribution) for r in candidate.reasons]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert magnitudes[-1] >= np.sort(np.abs(row))[-3] - 1e-5, "no group left out is larger"


def test_fifty_candidates_top_k(gateway: Any) -> None:
    ids = [f"i_{i:06d}" for i in range(50)]
    with RankingClient(gateway.address) as client:
        full = client.rank("u_000011", ids, timestamp_s=NOW)
        top = client.rank("u_000011", ids, top_k=5, timestamp_s=NOW)
    assert len(full.candidates) + len(full.filtered) == 50, "answered or reported, none lost"
    assert [c.id for c in top.candidates] == [c.id for c in full.candidates[:5]]


def test_unknown_user_and_candidate_still_answered_and_flagged(gateway: Any) -> None:
    ids = ["i_000001", "i_000002", "sku_never_seen"]
    with RankingClient(gateway.address) as client:
        response = client.rank("user_never_seen", ids, timestamp_s=NOW)
        known = client.rank("u_000003", ids, timestamp_s=NOW)
    assert response.unknown_user
    assert {c.id for c in response.candidates} == set(ids)
    assert all(np.isfinite(c.score) for c in response.candidates)
    flags = {c.id: c.unknown for c in response.candidates}
    assert flags == {"i_000001": False, "i_000002": False, "sku_never_seen": True}
    assert not known.unknown_user


def _rank_error(address: str, request: pb.RankRequest) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.RankingServiceStub(channel).Rank(request, timeout=5)
    return info.value


def _item(cid: str, t: int = pb.CANDIDATE_TYPE_ITEM) -> pb.Candidate:
    return pb.Candidate(id=cid, type=t)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.RankRequest(user_id="", candidates=[_item("i_000001")]), "user_id"),
        (pb.RankRequest(user_id="u_000001"), "candidates"),
        (
            pb.RankRequest(user_id="u_000001", candidates=[_item("i_000001"), _item("x", 9)]),
            "candidates[1].type",
        ),
        (pb.RankRequest(user_id="u_000001", candidates=[_item("x", 0)]), "candidates[0].type"),
        (
            pb.RankRequest(user_id="u_000001", candidates=[_item(f"i_{i}") for i in range(101)]),
            "candidates",
        ),
        (pb.RankRequest(user_id="u_000001", candidates=[_item("")]), "candidates[0].id"),
        (
            pb.RankRequest(user_id="u_000001", candidates=[_item("i_1"), _item("i_1")]),
            "candidates[1].id",
        ),
        (pb.RankRequest(user_id="u_000001", candidates=[_item("i_1")], model="nope"), "model"),
    ],
    ids=[
        "empty-user",
        "no-candidates",
        "unknown-type",
        "unspecified-type",
        "over-max",
        "empty-id",
        "duplicate-id",
        "unknown-model",
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    gateway: Any, request_: pb.RankRequest, field: str
) -> None:
    error = _rank_error(gateway.address, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"{field}:"), error.details()


def test_health_and_reflection(gateway: Any) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_status(gateway.address) == serving
    assert health_status(gateway.address, "scoring.api.v1.RankingService") == serving

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(gateway.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in response.list_services_response.service}
    assert {"scoring.api.v1.RankingService", "grpc.health.v1.Health"} <= names
