"""The gateway's own logic around carts and missing feature services, on plain stand-ins for the
feature store, Triton and the model registry (no real service is claimed here: the read of a
cart through the real Redis store is in test_redis_source.py, serving end to end in tests/e2e).

- A target whose feature service is not registered answers FAILED_PRECONDITION naming it and
  does not hold back the others; health stays truthful (NOT_SERVING while a version of it is
  wanted or loaded).
- A cart is read once, before the candidates, in the same feature budget: its codes become the
  request values, its neighbours the candidates when there are none; in-cart candidates are
  filtered; a failed or slow cart read degrades, flagged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np
import pytest
from feast.errors import FeatureServiceNotFoundException

from scoring.api.v1 import scoring_pb2 as pb
from scoring.core.contract import FeatureContract, FeatureSpec
from scoring.core.errors import ScoringError
from scoring.core.model_io import PARAM_FEATURE_SERVICE, PARAM_SCHEMA_HASH
from scoring.core.settings import GatewaySettings
from scoring.core.targets import (
    CART_CATEGORY_FIELDS,
    CART_ITEM_FIELDS,
    CART_SIZE_FIELD,
    TARGETS,
)
from scoring.gateway.feature_source import FeatureRequest, OnlineFeatures, RowsRequest
from scoring.gateway.prometheus import GatewayMetrics
from scoring.gateway.routing import FeatureServiceMissingError, ModelRouter
from scoring.gateway.servicer import RankingServicer
from scoring.gateway.triton_client import ModelInfo, Scored
from scoring.registry.types import Routing, Stage, TargetRouting, VersionRecord

ITEM, BASKET = TARGETS["item_ranker"], TARGETS["basket_completer"]
CART_VIEW = "item_copurchase"
NEIGHBOURS = 4

ITEM_SPECS = [
    FeatureSpec("user_behavior", "clicks_30d", "Float32", 0.0, "user"),
    FeatureSpec("item_stats", "sales_7d", "Float32", 0.0, "item"),
    FeatureSpec("item_stats", "in_stock", "Int64", 1.0, "item"),
]
CONTRACTS = {
    "item_ranker_v1": FeatureContract.build("item_ranker_v1", ITEM_SPECS),
    "basket_completer_v1": FeatureContract.build(
        "basket_completer_v1",
        [*ITEM_SPECS, FeatureSpec("basket_features", "cp_cart_hits", "Float32", 0.0, None)],
    ),
}
CART_FEATURES = tuple(
    f"{CART_VIEW}__{name}"
    for name in (
        "item_code",
        "category_code",
        *(f"cp_id_{k:02d}" for k in range(NEIGHBOURS)),
        *(f"cp_count_{k:02d}" for k in range(NEIGHBOURS)),
    )
)


def cart_row(code: float, category: float, *pairs: tuple[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {"item_code": code, "category_code": category}
    for k, (item, count) in enumerate(pairs):
        row[f"cp_id_{k:02d}"], row[f"cp_count_{k:02d}"] = item, count
    return row


@dataclass
class PlainStore:
    """A FeatureSource of plain dicts: the registered services and the cart items' rows."""

    services: set[str] = field(
        default_factory=lambda: {"item_ranker_v1", "basket_completer_v1", "basket_cart_v1"}
    )
    cart_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    out_of_stock: set[str] = field(default_factory=set)
    cart_error: Exception | None = None
    cart_delay_s: float = 0.0
    reads: list[FeatureRequest] = field(default_factory=list)
    row_reads: list[RowsRequest] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def contract(self, service: str) -> FeatureContract:
        if service not in self.services:
            raise FeatureServiceNotFoundException(service, "test")
        return CONTRACTS[service]

    def stored_features(self, service: str) -> tuple[str, ...]:
        if service not in self.services:
            raise FeatureServiceNotFoundException(service, "test")
        return CART_FEATURES

    async def read(self, request: FeatureRequest) -> OnlineFeatures:
        self.reads.append(request)
        self.order.append("candidates")
        ids = request.candidate_ids
        columns: dict[str, list[Any]] = {ref: [None] * len(ids) for ref in request.contract.refs}
        columns["item_stats__in_stock"] = [0 if c in self.out_of_stock else 1 for c in ids]
        return OnlineFeatures(columns, {"item_stats": 10.0}, {})

    async def read_rows(self, request: RowsRequest) -> OnlineFeatures:
        self.row_reads.append(request)
        self.order.append("cart")
        if self.cart_delay_s:
            await asyncio.sleep(self.cart_delay_s)
        if self.cart_error is not None:
            raise self.cart_error
        rows = [self.cart_rows.get(i) for i in request.ids]
        columns = {
            name: [None if row is None else row.get(name.split("__")[1]) for row in rows]
            for name in CART_FEATURES
        }
        return OnlineFeatures(columns, {CART_VIEW: 30.0}, {CART_VIEW: 0})

    def check(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


@dataclass
class PlainTriton:
    """A TritonScorer of plain values: the loaded models score candidates in request order."""

    loaded: set[str] = field(default_factory=lambda: {"item_ranker", "basket_completer"})

    async def model_info(self, model: str, version: str = "") -> ModelInfo:
        if model not in self.loaded:
            return ModelInfo(False)
        service = TARGETS[model].feature_service
        params = {PARAM_FEATURE_SERVICE: service, PARAM_SCHEMA_HASH: CONTRACTS[service].schema_hash}
        return ModelInfo(True, 0, version, params)

    async def score(
        self,
        model: str,
        matrix: np.ndarray,
        timeout_s: float,
        max_batch_size: int,
        contributions: bool = False,
        version: str = "",
    ) -> Scored:
        n = len(matrix)
        return Scored(np.linspace(0.9, 0.1, n).astype(np.float32), version or "1", None)


def record(target: str, version: int) -> VersionRecord:
    service = TARGETS[target].feature_service
    now = datetime.now(UTC)
    return VersionRecord(
        target, version, Stage.PRODUCTION, "", "", service, "h", None, None, {}, None, None,
        now, "test", now,
    )  # fmt: skip


@dataclass
class PlainRegistry:
    """A RoutingSource of one fixed routing (production versions by target)."""

    production: dict[str, int] = field(default_factory=dict)

    def revision(self) -> int:
        return 1

    def routing(self) -> Routing:
        targets = {
            name: TargetRouting(name, record(name, version), None, None)
            for name, version in self.production.items()
        }
        return Routing(1, targets)

    def heartbeat(self, instance_id: str, revision: int, detail: dict[str, Any] | None) -> None:
        pass

    def forget_instance(self, instance_id: str) -> None:
        pass


class Context:
    """What the servicer asks of a gRPC context: the time left."""

    def time_remaining(self) -> float:
        return 2.0


def router(store: PlainStore, triton: PlainTriton, registry: PlainRegistry) -> ModelRouter:
    return ModelRouter([ITEM, BASKET], store, triton, registry)  # type: ignore[arg-type]


def servicer(
    store: PlainStore, triton: PlainTriton | None = None, **settings: Any
) -> tuple[RankingServicer, ModelRouter]:
    triton = triton or PlainTriton()
    routes = router(store, triton, PlainRegistry())
    answer = RankingServicer(
        GatewaySettings(**settings),
        store,
        triton,  # type: ignore[arg-type]
        routes,
        GatewayMetrics(),
    )
    return answer, routes


def rank(answer: RankingServicer, **fields: Any) -> pb.RankResponse:
    async def go() -> pb.RankResponse:
        response = await answer.Rank(pb.RankRequest(**fields), Context())  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the deferred bookkeeping runs
        return response

    return asyncio.run(go())


def items(*ids: str) -> list[pb.Candidate]:
    return [pb.Candidate(id=i, type=pb.CANDIDATE_TYPE_ITEM) for i in ids]


def ready(store: PlainStore, routes: ModelRouter) -> bool:
    async def go() -> bool:
        await routes.read_contracts()
        return await routes.refresh()

    return asyncio.run(go())


# Missing feature services.


def test_a_target_without_its_feature_service_is_refused_and_the_others_serve() -> None:
    store = PlainStore(services={"item_ranker_v1"})
    answer, routes = servicer(store, PlainTriton({"item_ranker"}))
    assert ready(store, routes), "nothing wants basket_completer: it holds no one back"
    assert rank(answer, user_id="u", candidates=items("a", "b")).model_name == "item_ranker"
    with pytest.raises(FeatureServiceMissingError) as info:
        rank(answer, user_id="u", candidates=items("a", "b"), cart_item_ids=["c"])
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message == (
        "basket_completer: feature service basket_completer_v1 is not in the feature registry; "
        "apply the feature repo that defines it (`scoring features apply`), then train and "
        "promote basket_completer"
    )


def test_a_missing_cart_feature_service_is_named() -> None:
    store = PlainStore(services={"item_ranker_v1", "basket_completer_v1"})
    answer, routes = servicer(store)
    asyncio.run(routes.read_contracts())
    with pytest.raises(
        FeatureServiceMissingError, match="feature service basket_cart_v1 is not in the"
    ):
        rank(answer, user_id="u", cart_item_ids=["c"])


@pytest.mark.parametrize(
    ("wanted", "loaded"),
    [({"basket_completer": 3}, {"item_ranker"}), ({}, {"item_ranker", "basket_completer"})],
    ids=["wanted-by-the-registry", "loaded-in-triton"],
)
def test_health_is_not_serving_while_a_version_of_it_is_wanted_or_loaded(
    wanted: dict[str, int], loaded: set[str]
) -> None:
    store = PlainStore(services={"item_ranker_v1"})
    routes = router(store, PlainTriton(loaded), PlainRegistry(wanted))
    assert not ready(store, routes)
    with pytest.raises(ScoringError, match="basket_completer_v1"):
        routes.serving(BASKET)
    assert routes.serving(ITEM).production.target is ITEM  # still served


def test_a_feature_service_that_comes_back_serves_again() -> None:
    store = PlainStore(services={"item_ranker_v1"})
    triton = PlainTriton({"item_ranker"})
    answer, routes = servicer(store, triton)
    assert ready(store, routes)
    store.services |= {"basket_completer_v1", "basket_cart_v1"}
    triton.loaded.add("basket_completer")
    assert ready(store, routes)
    assert routes.serving(BASKET).production.target is BASKET
    assert rank(answer, user_id="u", cart_item_ids=["c"]).model_name == "basket_completer"


# Carts.


def basket_store() -> PlainStore:
    return PlainStore(
        cart_rows={
            "a": cart_row(11.0, 2.0, ("x", 5.0), ("b", 9.0), ("y", 4.0)),
            "b": cart_row(12.0, 3.0, ("y", 3.0), ("z", 6.0)),
        },
        out_of_stock={"z"},
    )


def test_the_cart_is_read_first_and_feeds_the_request_values() -> None:
    store = basket_store()
    answer, routes = servicer(store)
    assert ready(store, routes)
    response = rank(
        answer, user_id="u", candidates=items("x", "a", "y", "z"), cart_item_ids=["a", "b", "q"]
    )
    assert store.order == ["cart", "candidates"]
    (rows,) = store.row_reads
    assert (rows.service, rows.join_key, rows.ids) == ("basket_cart_v1", "item_id", ("a", "b", "q"))
    values = store.reads[0].request_values
    assert [values[f] for f in CART_ITEM_FIELDS[:4]] == [11.0, 12.0, -1.0, -1.0]
    assert [values[f] for f in CART_CATEGORY_FIELDS[:4]] == [2.0, 3.0, -1.0, -1.0]
    assert values[CART_SIZE_FIELD] == 3.0
    assert (response.model_name, response.feature_service) == (
        "basket_completer",
        "basket_completer_v1",
    )
    assert [c.id for c in response.candidates] == ["x", "y"]
    assert {f.id: f.reason for f in response.filtered} == {"a": "in_cart", "z": "out_of_stock"}
    assert not response.proposed and not response.degraded
    assert response.feature_age_s[CART_VIEW] == 30.0
    # The new targets are metric labels like the others.
    sample = answer.metrics.registry.get_sample_value
    labels = {"target": "basket_completer", "arm": "unmanaged", "version": "1"}
    assert sample("scoring_arm_requests_total", labels) == 1


def test_a_cart_without_candidates_gets_its_neighbours_proposed() -> None:
    store = basket_store()
    answer, routes = servicer(store)
    assert ready(store, routes)
    response = rank(answer, user_id="u", cart_item_ids=["a", "b"], top_k=2)
    # y: 4 + 3, z: 6, x: 5; b is in the cart. z is out of stock: filtered, not returned.
    assert store.reads[0].candidate_ids == ("y", "z", "x")
    assert response.proposed
    assert [c.id for c in response.candidates] == ["y", "x"]
    assert [(f.id, f.reason) for f in response.filtered] == [("z", "out_of_stock")]
    # At most max_candidates are proposed.
    answer, routes = servicer(basket_store(), max_candidates=1)
    assert ready(basket_store(), routes)
    assert [c.id for c in rank(answer, user_id="u", cart_item_ids=["a", "b"]).candidates] == ["y"]


def test_a_cart_of_unknown_items_and_no_candidates_answers_empty() -> None:
    store = basket_store()
    answer, routes = servicer(store)
    assert ready(store, routes)
    response = rank(answer, user_id="u", cart_item_ids=["q"])
    assert response.proposed and not response.candidates and not response.degraded
    assert store.reads == [], "nothing to read features for"


def test_a_failed_cart_read_degrades_the_answer() -> None:
    store = basket_store()
    store.cart_error = ConnectionError("redis down")
    answer, routes = servicer(store)
    assert ready(store, routes)
    response = rank(answer, user_id="u", candidates=items("x", "a"), cart_item_ids=["a"])
    assert response.degraded
    assert response.degradations[0].startswith("cart_unavailable: feature store error reading ")
    values = store.reads[0].request_values
    assert values[CART_ITEM_FIELDS[0]] == -1.0 and values[CART_SIZE_FIELD] == 1.0
    assert [c.id for c in response.candidates] == ["x"]
    assert [f.reason for f in response.filtered] == ["in_cart"]
    # Without candidates there is nothing to propose: an empty, degraded answer.
    proposed = rank(answer, user_id="u", cart_item_ids=["a"])
    assert proposed.proposed and proposed.degraded and not proposed.candidates
    assert (
        answer.metrics.registry.get_sample_value("scoring_degraded_total", {"reason": "cart"}) == 2
    )


def test_a_slow_cart_read_spends_the_feature_budget() -> None:
    store = basket_store()
    store.cart_delay_s = 0.5
    answer, routes = servicer(store, feature_timeout_ms=50)
    assert ready(store, routes)
    response = rank(answer, user_id="u", candidates=items("x", "y"), cart_item_ids=["a"])
    assert response.degradations == ["features_timeout: no answer about the cart in 50 ms"]
    assert store.reads == [], "the budget was spent on the cart"
    assert [c.id for c in response.candidates] == ["x", "y"]  # scored on defaults
