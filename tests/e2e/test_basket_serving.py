"""Complete-the-basket and bundles over the real stack (Feast -> gateway -> Triton): a cart's
request values reach the basket model, a cart without candidates gets its neighbours proposed,
in-cart candidates are filtered; bundles go to the bundle ranker; a target whose feature
service is missing is refused by name while the others serve."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2
from typer.testing import CliRunner

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.cli import app
from scoring.client import RankingClient
from scoring.core import feature_repo
from scoring.core.contract import contract_from_store
from scoring.core.targets import (
    BASKET_TARGET,
    CART_CATEGORY_FIELDS,
    CART_ITEM_FIELDS,
    CART_SIZE_FIELD,
    TARGETS,
    CandidateKind,
)
from scoring.gateway.process import GatewayProcess, health_status
from scoring.trainer.export import list_versions

from ..conftest import FeatureRepo, private_stack

pytestmark = [pytest.mark.e2e, pytest.mark.triton]
NOW = int(time.time())
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def stub(address: str) -> Any:
    return pb_grpc.RankingServiceStub(grpc.insecure_channel(address))


def cart_request(
    user: str, cart: Sequence[str], ids: Sequence[str] = (), **kw: Any
) -> pb.RankRequest:
    request = pb.RankRequest(
        user_id=user,
        candidates=[pb.Candidate(id=i, type=pb.CANDIDATE_TYPE_ITEM) for i in ids],
        cart_item_ids=cart,
        **kw,
    )
    request.context.timestamp.seconds = NOW
    return request


def bought_together(repo: FeatureRepo) -> list[str]:
    """Items of the log's most bought basket pair and more: items with co-purchase rows."""
    events = repo.log.events
    purchases = events[(events["event_type"] == "purchase") & (events["item_id"] != "")]
    return list(purchases["item_id"].value_counts().index[:6])


def in_stock(repo: FeatureRepo) -> set[str]:
    stats = repo.data.tables["item_stats"].sort_values("event_timestamp")
    latest = stats.groupby("item_id").tail(1)
    return set(latest.loc[latest["in_stock"] == 1, "item_id"])


def expected_scores(
    repo: FeatureRepo, model_repository: Path, user: str, cart: list[str], ids: list[str]
) -> np.ndarray:
    """The basket model's scores computed outside the gateway: the cart's codes read from Feast
    (basket_cart_v1), the candidates' features from Feast's own online read with the cart's
    request fields, the TorchScript file."""
    store = repo.store()
    target = TARGETS[BASKET_TARGET]
    assert target.cart_feature_service is not None
    cart_rows = store.get_online_features(
        features=store.get_feature_service(target.cart_feature_service),
        entity_rows=[{"item_id": c} for c in cart],
    ).to_dict()

    def code(value: Any) -> float:
        return -1.0 if value is None or value != value else float(value)

    values: dict[str, float] = {CART_SIZE_FIELD: float(len(cart))}
    for k, (item_field, category_field) in enumerate(
        zip(CART_ITEM_FIELDS, CART_CATEGORY_FIELDS, strict=True)
    ):
        values[item_field] = code(cart_rows["item_code"][k]) if k < len(cart) else -1.0
        values[category_field] = code(cart_rows["category_code"][k]) if k < len(cart) else -1.0
    contract = contract_from_store(store, target.feature_service)
    online = store.get_online_features(
        features=store.get_feature_service(target.feature_service),
        entity_rows=[{"user_id": user, "item_id": c, "request_ts": NOW, **values} for c in ids],
        full_feature_names=True,
    ).to_dict()
    matrix = contract.assemble({ref: online[ref] for ref in contract.refs}).matrix
    version = str(list_versions(model_repository / BASKET_TARGET)[-1])
    model = torch.jit.load(str(model_repository / BASKET_TARGET / version / "model.pt"))
    with torch.no_grad():
        outputs = model(torch.from_numpy(matrix))
    return np.asarray(outputs[0].numpy().ravel())


def test_a_cart_reaches_the_basket_model_and_its_items_are_filtered(
    gateway: Any, feature_repo_ready: FeatureRepo, model_repository: Path
) -> None:
    popular = bought_together(feature_repo_ready)
    cart = popular[:2]
    stocked = sorted(in_stock(feature_repo_ready) - set(cart))
    ids = [*stocked[:8], cart[0]]
    # The first read of a feature service builds its read plan: may exceed a feature budget.
    stub(gateway.address).Rank(cart_request("u_000005", cart, ids), timeout=10)
    response = stub(gateway.address).Rank(cart_request("u_000005", cart, ids), timeout=10)
    assert (response.model_name, response.feature_service) == (
        BASKET_TARGET,
        "basket_completer_v1",
    )
    assert response.model_version and not response.degraded, response.degradations
    assert not response.proposed
    assert [(f.id, f.reason) for f in response.filtered] == [(cart[0], "in_cart")]
    assert {c.id for c in response.candidates} == set(stocked[:8])
    assert "item_copurchase" in response.feature_age_s

    expected = expected_scores(feature_repo_ready, model_repository, "u_000005", cart, ids)
    scores = dict(zip(ids, expected, strict=True))
    for c in response.candidates:
        assert c.score == pytest.approx(scores[c.id], abs=1e-5), c.id
    # Another cart changes the request values, and so the scores.
    other = stub(gateway.address).Rank(
        cart_request("u_000005", popular[2:5], stocked[:8]), timeout=10
    )
    assert {c.id: c.score for c in other.candidates} != {c.id: c.score for c in response.candidates}


def test_a_cart_without_candidates_gets_its_neighbours_ranked(
    gateway: Any, feature_repo_ready: FeatureRepo
) -> None:
    cart = bought_together(feature_repo_ready)[:3]
    with RankingClient(gateway.address) as client:
        response = client.rank("u_000007", [], cart=cart, top_k=5, timestamp_s=NOW)
    assert response.proposed and response.model_name == BASKET_TARGET
    assert response.candidates and len(response.candidates) <= 5
    proposed = {c.id for c in response.candidates} | {f.id for f in response.filtered}
    assert not proposed & set(cart)
    assert all(i.startswith("i_") for i in proposed)
    assert [c.rank for c in response.candidates] == list(range(1, len(response.candidates) + 1))
    # The same from the shell: `scoring rank USER --cart a,b,c`.
    args = ["rank", "u_000007", "--cart", ",".join(cart), "--address", gateway.address]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(candidates proposed from the cart)" in result.output
    assert CliRunner().invoke(app, ["rank", "u_000007"]).exit_code == 2  # neither
    # A cart the store does not know: nothing to propose, an empty answer.
    unknown = stub(gateway.address).Rank(cart_request("u_000007", ["nope"]), timeout=10)
    assert unknown.proposed and not unknown.candidates and not unknown.degraded


def test_bad_carts_are_invalid_argument(gateway: Any) -> None:
    cases = [
        (cart_request("u_1", ["i_000001", "i_000001"]), "cart_item_ids[1]: duplicate of "),
        (cart_request("u_1", ["i_000001", ""]), "cart_item_ids[1]: must not be empty"),
        (cart_request("u_1", [f"i_{k:06d}" for k in range(51)]), "cart_item_ids: 51 cart"),
        (cart_request("u_1", ["i_000001"], ["i_000002"], model="item_ranker"), "cart_item_ids:"),
    ]
    bundles = cart_request("u_1", ["i_000001"])
    bundles.candidates.add(id="b_000001", type=pb.CANDIDATE_TYPE_BUNDLE)
    cases.append((bundles, "cart_item_ids: a cart goes with item candidates"))
    for request, prefix in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub(gateway.address).Rank(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(prefix), info.value.details()


def test_bundles_go_to_the_bundle_ranker_with_its_filter_reasons(
    gateway: Any, feature_repo_ready: FeatureRepo
) -> None:
    stats = feature_repo_ready.data.tables["bundle_stats"].sort_values("event_timestamp")
    latest = stats.groupby("bundle_id").tail(1).set_index("bundle_id")
    ids = list(latest.index)
    args = ["rank", "u_000003", *ids[:3], "--kind", "bundle", "--address", gateway.address]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bundles for u_000003" in result.output
    with RankingClient(gateway.address) as client:
        # The first read of a feature service builds its read plan (its views, on-demand
        # UDFs), which may take longer than a feature budget on a busy machine.
        client.rank("u_000003", ids, CandidateKind.BUNDLE, timestamp_s=NOW)
        response = client.rank("u_000003", ids, CandidateKind.BUNDLE, timestamp_s=NOW)
    assert (response.model_name, response.feature_service) == ("bundle_ranker", "bundle_ranker_v1")
    assert response.model_version and not response.degraded, response.degradations
    assert all(c.type == pb.CANDIDATE_TYPE_BUNDLE for c in response.candidates)
    reasons = {f.id: f.reason for f in response.filtered}
    assert set(reasons.values()) <= {"bundle_item_unavailable", "bundle_ended"}
    unavailable = set(latest.index[latest["all_in_stock"] == 0])
    ended = set(latest.index[latest["end_ts"] <= NOW])
    assert {i for i, r in reasons.items() if r == "bundle_item_unavailable"} == unavailable
    assert {i for i, r in reasons.items() if r == "bundle_ended"} == ended - unavailable
    assert len(response.candidates) + len(reasons) == len(ids)


def test_a_missing_cart_feature_service_refuses_only_its_target(
    tmp_path: Path, feature_repo_ready: FeatureRepo, model_repository: Path
) -> None:
    from scoring.triton.server import TritonServer

    settings = private_stack(tmp_path, feature_repo_ready, model_repository)
    feature_repo.open_store(settings.feast.repo_path).delete_feature_service("basket_cart_v1")
    gateway = GatewayProcess(settings, log_path=tmp_path / "gateway.log")
    with TritonServer(settings.triton, list(TARGETS)):
        gateway.start()
        try:
            answer = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until the first health round routed it
                try:
                    answer = stub(gateway.address).Rank(
                        cart_request("u_000001", [], ["i_000001", "i_000002"]), timeout=5
                    )
                except grpc.RpcError:
                    answer = None
                if answer is not None and answer.model_version:
                    break
                time.sleep(0.2)
            assert answer is not None and answer.model_name == "item_ranker", gateway.log_tail()
            assert answer.model_version and not answer.degraded
            with pytest.raises(grpc.RpcError) as info:
                stub(gateway.address).Rank(cart_request("u_000001", ["i_000001"]), timeout=5)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "feature service basket_cart_v1" in (info.value.details() or "")
            # Triton has a basket_completer loaded that cannot read its cart: a target meant to
            # serve and unable to, so the gateway truthfully reports NOT_SERVING.
            assert health_status(gateway.address) == NOT_SERVING
        finally:
            assert gateway.stop() == 0, gateway.log_tail()
