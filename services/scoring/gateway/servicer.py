"""The RankingService: validate, fetch features, assemble, infer, rank."""

from __future__ import annotations

import asyncio
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import structlog

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.errors import DeadlineExceededError
from scoring.core.logging import hash_id
from scoring.core.settings import GatewaySettings
from scoring.core.targets import USER_ENTITY
from scoring.gateway.features import FeatureSource
from scoring.gateway.request import TYPE_OF_KIND, RankQuery, parse_rank_request
from scoring.gateway.routing import ModelRouter, ServedModel
from scoring.gateway.triton_client import TritonScorer

logger = structlog.get_logger(__name__)
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RankingServicer(pb_grpc.RankingServiceServicer):
    """Ranks one user's candidates with the model of their target."""

    def __init__(
        self,
        settings: GatewaySettings,
        features: FeatureSource,
        scorer: TritonScorer,
        router: ModelRouter,
    ) -> None:
        self.settings = settings
        self.features = features
        self.scorer = scorer
        self.router = router
        self.pool = ThreadPoolExecutor(settings.feature_workers, thread_name_prefix="features")

    def _remaining(
        self, context: grpc.aio.ServicerContext[pb.RankRequest, pb.RankResponse], started: float
    ) -> float:
        caller = context.time_remaining()
        default = self.settings.default_timeout_ms / 1000.0 - (time.monotonic() - started)
        remaining = default if caller is None else caller
        if remaining <= 0:
            raise DeadlineExceededError("deadline exceeded")
        return remaining

    async def Rank(  # gRPC method name
        self,
        request: pb.RankRequest,
        context: grpc.aio.ServicerContext[pb.RankRequest, pb.RankResponse],
    ) -> pb.RankResponse:
        started = time.monotonic()
        query = parse_rank_request(request, self.settings.max_candidates, time.time())
        REQUEST_ID.set(query.request_id)
        structlog.contextvars.bind_contextvars(request_id=query.request_id)
        served = self.router.get(query.target)

        loop = asyncio.get_running_loop()
        fetch = loop.run_in_executor(
            self.pool,
            self.features.fetch,
            served.contract,
            query.target,
            query.user_id,
            query.candidate_ids,
            {"request_ts": query.request_ts},
        )
        try:
            frame = await asyncio.wait_for(fetch, self._remaining(context, started))
        except TimeoutError:
            raise DeadlineExceededError("deadline exceeded while reading features") from None
        assembled = served.contract.assemble(frame)
        scores, version = await self.scorer.score(
            served.target.name,
            assembled.matrix,
            self._remaining(context, started),
            served.max_batch_size,
        )
        response = self._response(query, served, assembled.missing, scores, version)
        logger.info(
            "rank",
            user=hash_id(query.user_id),
            target=served.target.name,
            version=version,
            candidates=len(query.candidate_ids),
            unknown_user=response.unknown_user,
            ms=round((time.monotonic() - started) * 1000, 2),
        )
        return response

    @staticmethod
    def _response(
        query: RankQuery,
        served: ServedModel,
        missing: np.ndarray,
        scores: np.ndarray,
        version: str,
    ) -> pb.RankResponse:
        contract = served.contract
        user_cols = contract.columns_of(USER_ENTITY)
        cand_cols = contract.columns_of(query.kind.value)
        unknown_user = bool(user_cols.size and missing[0, user_cols].all())
        unknown = (
            np.asarray(missing[:, cand_cols].all(axis=1))
            if cand_cols.size
            else np.zeros(len(scores), dtype=bool)
        )
        order = np.argsort(-scores, kind="stable")[: query.top_k]
        cand_type = TYPE_OF_KIND[query.kind]
        return pb.RankResponse(
            candidates=[
                pb.ScoredCandidate(
                    id=query.candidate_ids[i],
                    type=cand_type,  # type: ignore[arg-type]
                    score=float(scores[i]),
                    rank=rank,
                    unknown=bool(unknown[i]),
                )
                for rank, i in enumerate(order, start=1)
            ],
            model_name=served.target.name,
            model_version=version,
            request_id=query.request_id,
            unknown_user=unknown_user,
            feature_service=contract.service,
        )
