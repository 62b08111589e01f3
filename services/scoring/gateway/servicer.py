"""The RankingService: validate, fetch features, assemble, infer, post-process, log."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import grpc
import numpy as np
import structlog

from scoring.api.v1 import scoring_pb2 as pb
from scoring.api.v1 import scoring_pb2_grpc as pb_grpc
from scoring.core.contract import Assembled, FeatureContract
from scoring.core.errors import (
    BackendUnavailableError,
    DeadlineExceededError,
    InvalidRequestError,
    ScoringError,
)
from scoring.core.privacy import Pseudonymizer
from scoring.core.settings import GatewaySettings
from scoring.core.targets import USER_ENTITY
from scoring.gateway.breaker import Breakers
from scoring.gateway.cart import cart_values, propose
from scoring.gateway.event_writer import ServedEventWriter
from scoring.gateway.feature_log import FeatureLog, ServedRequest
from scoring.gateway.feature_source import (
    FeatureRequest,
    FeatureSource,
    OnlineFeatures,
    RowsRequest,
)
from scoring.gateway.prometheus import GatewayMetrics
from scoring.gateway.ranking import Columns, in_cart, rank, top_reasons, unavailable
from scoring.gateway.request import (
    TYPE_OF_KIND,
    RankQuery,
    check_batch_size,
    check_count,
    parse_feedback,
    parse_rank_request,
)
from scoring.gateway.routing import ModelRouter, ServedModel
from scoring.gateway.triton_client import Scored, TritonScorer

logger = structlog.get_logger(__name__)
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
Context = grpc.aio.ServicerContext
RankContext = Context[pb.RankRequest, pb.RankResponse]
BatchContext = Context[pb.RankBatchRequest, pb.RankBatchResponse]
FeedbackContext = Context[pb.FeedbackRequest, pb.FeedbackResponse]

# Time kept back from Triton's share of the deadline, to answer (or fall back) in time: a
# fifth of what is left, at most 50 ms.
ANSWER_MARGIN_S = 0.05
ANSWER_MARGIN_SHARE = 0.2
FEATURE_SHARE = 0.7


@dataclass
class Outcome:
    """What happened to one request on its way through, for the response and the logs."""

    served: ServedModel | None = None
    degradations: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    feature_age_s: dict[str, float] = field(default_factory=dict)


class Deadline:
    """The request's time budget: the caller's deadline, else the configured default."""

    def __init__(self, context: Context[Any, Any], default_s: float) -> None:
        self.started = time.monotonic()
        caller = context.time_remaining()
        self.end = self.started + (default_s if caller is None else caller)

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise DeadlineExceededError("deadline exceeded")
        return left


def _logged(bookkeeping: Callable[[], None]) -> None:
    """Runs a request's deferred bookkeeping; a bug in it is logged, never raised to the loop."""
    try:
        bookkeeping()
    except Exception:
        logger.exception("observe_failed")


class RankingServicer(pb_grpc.RankingServiceServicer):
    """Ranks one user's candidates with the model of their target."""

    def __init__(
        self,
        settings: GatewaySettings,
        features: FeatureSource,
        scorer: TritonScorer,
        router: ModelRouter,
        metrics: GatewayMetrics,
        feature_log: FeatureLog | None = None,
        events: ServedEventWriter | None = None,
        *,
        pseudonym: Callable[[str], str] | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self.settings = settings
        self.breakers = breakers or Breakers(settings.breaker_failures)
        # User ids in log lines and events: keyed hashes (a key of this process when none).
        self.pseudonym = pseudonym or Pseudonymizer.random()
        self.features = features
        self.scorer = scorer
        self.router = router
        self.metrics = metrics
        self.feature_log = feature_log
        self.events = events
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        # Turns of batched requests at the feature store (one gateway-wide queue: two batches
        # share it too); single Rank requests do not wait for a turn.
        self._batch_reads = asyncio.Semaphore(settings.batch_feature_reads)
        # The request ids served last, oldest first (a dict keeps insertion order), for Feedback.
        self._served_ids: dict[str, None] = {}

    # The RPCs, named as the service defines them.
    async def Rank(self, request: pb.RankRequest, context: RankContext) -> pb.RankResponse:
        deadline = Deadline(context, self.settings.default_timeout_ms / 1000.0)
        settings = self.settings
        query = parse_rank_request(
            request,
            settings.max_candidates,
            time.time(),
            settings.max_clock_skew_s,
            settings.max_cart_items,
        )
        return await self._answer(query, deadline)

    async def RankBatch(
        self, request: pb.RankBatchRequest, context: BatchContext
    ) -> pb.RankBatchResponse:
        deadline = Deadline(context, self.settings.default_timeout_ms / 1000.0)
        settings = self.settings
        check_count(len(request.requests), "requests", settings.max_batch_requests)
        check_batch_size(request, settings.max_batch_candidates, settings.max_candidates)
        queries = []
        now = time.time()
        for i, item in enumerate(request.requests):
            try:
                queries.append(
                    parse_rank_request(
                        item,
                        settings.max_candidates,
                        now,
                        settings.max_clock_skew_s,
                        settings.max_cart_items,
                    )
                )
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"requests[{i}].{exc.message}") from None
        turn = self._batch_reads
        responses = await asyncio.gather(*(self._answer(q, deadline, turn) for q in queries))
        return pb.RankBatchResponse(responses=responses)

    async def Feedback(
        self, request: pb.FeedbackRequest, context: FeedbackContext
    ) -> pb.FeedbackResponse:
        events = parse_feedback(request, time.time(), self.settings.max_clock_skew_s)
        if self.events is None:
            raise BackendUnavailableError("feedback: the event log is turned off on this gateway")
        unmatched = 0
        for event in events:
            # Accepted either way (another replica or an earlier run may have served the
            # request), but recorded and counted as unmatched: ids no Rank answer gave show up.
            event["matched"] = event["request_id"] in self._served_ids
            self.events.append("feedback", event)
            self.metrics.feedback.labels(event["type"]).inc()
            if not event["matched"]:
                unmatched += 1
                self.metrics.feedback_unmatched.labels(event["type"]).inc()
        if unmatched:
            logger.info("feedback_unmatched", events=len(events), unmatched=unmatched)
        return pb.FeedbackResponse(accepted=len(events))

    def _remember(self, request_id: str) -> None:
        """Keeps `request_id` among the last `feedback_match_window` ids served."""
        window = self.settings.feedback_match_window
        if window <= 0:
            return
        served = self._served_ids
        served[request_id] = None
        if len(served) > window:
            del served[next(iter(served))]

    async def _features(
        self,
        query: RankQuery,
        contract: FeatureContract,
        deadline: Deadline,
        outcome: Outcome,
        turn: asyncio.Semaphore | None = None,
    ) -> tuple[RankQuery, Assembled]:
        """Online features, or all defaults (flagged) when the store is slow or down.

        Returns the query with its candidates (proposed from the cart when it had none) and
        their features.

        Args:
            turn: a batched request reads when it gets a turn of this, and its feature budget
                starts then: read at once, a batch's reads would queue behind each other at
                the store with their budgets running.
        """
        started = time.monotonic()
        online: OnlineFeatures | None = None
        if turn is None:
            query, online = await self._read(query, contract, deadline, outcome)
        else:
            wait = FEATURE_SHARE * deadline.remaining()
            try:
                async with asyncio.timeout(wait):
                    await turn.acquire()
            except TimeoutError:
                outcome.degradations.append(
                    f"features_timeout: no turn to read in {wait * 1000:.0f} ms (batch)"
                )
            else:
                try:
                    query, online = await self._read(query, contract, deadline, outcome)
                finally:
                    turn.release()
        outcome.stages["features"] = time.monotonic() - started
        started = time.monotonic()
        n = len(query.candidate_ids)
        if online is None:
            if n:
                self.metrics.degraded.labels("features").inc()
            assembled = contract.defaults(n)
        else:
            for view, age in online.age_s.items():
                outcome.feature_age_s[view] = max(age, outcome.feature_age_s.get(view, age))
            assembled = contract.assemble(online.columns)
        outcome.stages["assembly"] = time.monotonic() - started
        return query, assembled

    async def _read(
        self, query: RankQuery, contract: FeatureContract, deadline: Deadline, outcome: Outcome
    ) -> tuple[RankQuery, OnlineFeatures | None]:
        """The online read under the request's feature budget; None (flagged) when it fails.

        A target that reads a cart first reads its cart's items (one read of its cart feature
        service, in the same budget): their codes become request values, and a request
        without candidates gets the cart's neighbours as its candidates (the query returned).
        """
        budget = min(
            self.settings.feature_timeout_ms / 1000.0, FEATURE_SHARE * deadline.remaining()
        )
        values: dict[str, Any] = {"request_ts": query.request_ts}
        stage = "features"
        try:
            # A timer on this task, not wait_for's extra task: two loop turns less a request.
            async with asyncio.timeout(budget):
                if query.target.cart_feature_service is not None:
                    stage = "cart"
                    query = await self._cart(query, values, outcome)
                    stage = "features"
                if not query.candidate_ids:  # a cart without known neighbours
                    return query, None
                request = FeatureRequest(
                    contract, query.target, query.user_id, query.candidate_ids, values
                )
                return query, await self.features.read(request)
        except TimeoutError:
            what = "no answer about the cart" if stage == "cart" else "no answer"
            outcome.degradations.append(f"features_timeout: {what} in {budget * 1000:.0f} ms")
        except ScoringError:
            raise
        except Exception as exc:
            logger.warning("feature_store_error", error=str(exc))
            outcome.degradations.append("features_unavailable: feature store error")
        return query, None

    async def _cart(self, query: RankQuery, values: dict[str, Any], outcome: Outcome) -> RankQuery:
        """Reads the cart's items; adds the cart's request values to `values`; returns the query
        with the proposed candidates when it had none. A failed read (not a timeout: that is the
        whole read's) leaves the cart's items unknown, flagged."""
        layout = self.router.cart(query.target)
        cart = query.cart_item_ids
        read: OnlineFeatures | None = None
        if cart:
            request = RowsRequest(
                layout.service, query.target.join_key, cart, float(query.request_ts)
            )
            try:
                read = await self.features.read_rows(request)
            except Exception as exc:
                logger.warning("cart_read_error", service=layout.service, error=str(exc))
                self.metrics.degraded.labels("cart").inc()
                outcome.degradations.append(
                    f"cart_unavailable: feature store error reading {layout.service}; "
                    "the cart's items count as unknown"
                )
            else:
                outcome.feature_age_s.update(read.age_s)
        values.update(cart_values(layout, cart, read))
        if not query.propose:
            return query
        proposed = () if read is None else propose(layout, cart, read, self.settings.max_candidates)
        return replace(query, candidate_ids=proposed, top_k=query.top_k or len(proposed))

    async def _score(
        self,
        query: RankQuery,
        served: ServedModel | None,
        problem: ScoringError | None,
        assembled: Assembled,
        columns: Columns,
        deadline: Deadline,
        outcome: Outcome,
    ) -> Scored:
        """The model's scores, or the popularity fallback (flagged) when it cannot answer."""
        started = time.monotonic()
        retried = False
        while served is not None:
            model = served.target.name
            breaker = self.breakers[model]
            if not breaker.allow():
                problem = BackendUnavailableError(f"{model}: circuit open ({breaker.reason})")
                break
            try:
                left = deadline.remaining()
            except DeadlineExceededError as exc:  # the caller's time, not the model's fault
                problem = exc
                break
            given = left - min(ANSWER_MARGIN_S, ANSWER_MARGIN_SHARE * left)
            try:
                scored = await self.scorer.score(
                    model,
                    assembled.matrix,
                    given,
                    served.max_batch_size,
                    contributions=served.explains,
                    version=served.version,
                )
                breaker.success()
                return scored
            except (BackendUnavailableError, DeadlineExceededError) as exc:
                problem = exc
                # The routing switched while this request was in flight (its version was just
                # unloaded): score once more with the version now routed to; not a failure of
                # the model.
                current = self._current(query)
                if not retried and current is not None and current != served:
                    served, retried = current, True
                    outcome.served = current
                    continue
                self._count_failure(model, exc, given)
                break
            finally:
                outcome.stages["inference"] = time.monotonic() - started
        assert problem is not None
        if query.disable_fallback:
            raise problem
        self.metrics.degraded.labels("model").inc()
        outcome.degradations.append(f"model_unavailable: {problem.message}; popularity order")
        popularity = columns.popularity
        n = len(query.candidate_ids)
        scores = np.zeros(n) if popularity is None else np.nan_to_num(popularity)
        return Scored(scores.astype(np.float32), "", None)

    def _count_failure(self, model: str, exc: ScoringError, given_s: float) -> None:
        """A failed inference, for the model's breaker: a timeout counts only when Triton had
        a fair share of time (a caller's 10 ms deadline is not the model's fault)."""
        too_short = self.settings.breaker_min_timeout_ms / 1000.0
        if isinstance(exc, DeadlineExceededError) and given_s < too_short:
            return
        if self.breakers[model].failure(exc.message):
            self.metrics.breaker_trips.labels(model, "failures").inc()
            logger.warning("breaker_opened", model=model, reason=exc.message)

    def _shadow(
        self, query: RankQuery, served: ServedModel, assembled: Assembled, scored: Scored
    ) -> None:
        """Scores the request with the shadow version off the hot path; logs, never returns."""
        try:
            shadow = self.router.serving(query.target).shadow
        except ScoringError:
            return
        if shadow is None or self.events is None or shadow.version == served.version:
            return
        if len(self._shadow_tasks) >= self.settings.shadow_max_in_flight:
            self.metrics.shadow.labels(query.target.name, "skipped").inc()
            return
        task = asyncio.create_task(self._run_shadow(query, shadow, assembled.matrix, scored))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _run_shadow(
        self, query: RankQuery, shadow: ServedModel, matrix: np.ndarray, primary: Scored
    ) -> None:
        started = time.monotonic()
        target = query.target.name
        try:
            result = await self.scorer.score(
                target,
                matrix,
                self.settings.default_timeout_ms / 1000.0,
                shadow.max_batch_size,
                version=shadow.version,
            )
        except Exception as exc:
            self.metrics.shadow.labels(target, "failed").inc()
            logger.warning("shadow_failed", target=target, version=shadow.version, error=str(exc))
            return
        self.metrics.shadow.labels(target, "scored").inc()
        assert self.events is not None
        self.events.append(
            "shadow",
            {
                "request_id": query.request_id,
                "at": time.time(),
                "target": target,
                "version": result.version,
                "primary_version": primary.version,
                "candidate_ids": list(query.candidate_ids),
                "scores": [round(float(v), 6) for v in result.scores],
                "primary_scores": [round(float(v), 6) for v in primary.scores],
                "latency_ms": round((time.monotonic() - started) * 1000, 3),
            },
        )

    async def drain_shadow(self, timeout_s: float = 5.0) -> None:
        """Waits for shadow scoring in flight (clean shutdown: its results are logged too)."""
        if self._shadow_tasks:
            await asyncio.wait(set(self._shadow_tasks), timeout=timeout_s)

    def _current(self, query: RankQuery) -> ServedModel | None:
        try:
            return self.router.get(query.target, query.user_id)
        except ScoringError:
            return None

    async def _answer(
        self, query: RankQuery, deadline: Deadline, turn: asyncio.Semaphore | None = None
    ) -> pb.RankResponse:
        REQUEST_ID.set(query.request_id)
        structlog.contextvars.bind_contextvars(request_id=query.request_id)
        target = query.target
        contract = self.router.contract(target)
        served: ServedModel | None
        problem: ScoringError | None = None
        try:
            served = self.router.get(target, query.user_id)
        except BackendUnavailableError as exc:
            served, problem = None, exc
            if query.disable_fallback:
                raise
        outcome = Outcome(served=served)
        query, assembled = await self._features(query, contract, deadline, outcome, turn)
        columns = Columns.of(target, contract, assembled.matrix, assembled.missing)
        if query.candidate_ids:
            scored = await self._score(
                query, served, problem, assembled, columns, deadline, outcome
            )
            served = outcome.served if scored.version else None
            if served is not None:
                self._shadow(query, served, assembled, scored)
            arm = served.arm if served is not None else "fallback"
        else:  # nothing to rank: a cart whose items have no known neighbours; no model call
            scored = Scored(np.zeros(0, dtype=np.float32), "", None)
            arm = served.arm if served is not None else "fallback"

        started = time.monotonic()
        dropped = {} if query.keep_unavailable else unavailable(columns, query.request_ts)
        dropped.update(in_cart(query.candidate_ids, query.cart_item_ids))
        order = rank(scored.scores, query.top_k, query.diversity, columns.category, set(dropped))
        response = self._response(query, contract, served, assembled, scored, order, dropped)
        response.arm = arm
        response.proposed = query.propose
        response.degradations.extend(outcome.degradations)
        for view, age in outcome.feature_age_s.items():
            response.feature_age_s[view] = age
        response.degraded = bool(outcome.degradations)
        self._remember(query.request_id)
        outcome.stages["postprocess"] = time.monotonic() - started
        outcome.stages["total"] = time.monotonic() - deadline.started
        # Metrics, events, the feature log and the log line are bookkeeping the caller does not
        # wait for: they run on the loop's next turn, after gRPC has written this response
        # (the handler's return sends it without yielding to the loop first).
        observe = partial(
            self._observe, query, contract, response, assembled, scored, order, outcome
        )
        asyncio.get_running_loop().call_soon(_logged, observe)
        return response

    def _observe(
        self,
        query: RankQuery,
        contract: FeatureContract,
        response: pb.RankResponse,
        assembled: Assembled,
        scored: Scored,
        order: np.ndarray,
        outcome: Outcome,
    ) -> None:
        target = query.target.name
        now, user = time.time(), self.pseudonym(query.user_id)
        for stage, seconds in outcome.stages.items():
            self.metrics.stage_latency.labels(stage, target).observe(seconds)
        self.metrics.candidates.observe(len(query.candidate_ids))
        self.metrics.count_defaults(contract, assembled.indicators)
        arm = response.arm
        version = scored.version or "fallback"
        self.metrics.arm_requests.labels(target, arm, version).inc()
        self.metrics.arm_latency.labels(target, arm).observe(outcome.stages["total"])
        if len(order):
            self.metrics.arm_top_score.labels(target, arm).observe(float(scored.scores[order[0]]))
        if self.events is not None:
            self.events.append(
                "request",
                {
                    "request_id": query.request_id,
                    "at": now,
                    "target": target,
                    "arm": arm,
                    "version": scored.version,
                    "user": user,
                    "candidates": len(query.candidate_ids),
                    "returned": [query.candidate_ids[i] for i in order],
                    "scores": [round(float(scored.scores[i]), 6) for i in order],
                    "latency_ms": round(outcome.stages["total"] * 1000, 3),
                    "degraded": response.degraded,
                },
            )
        if self.feature_log is not None and query.candidate_ids:
            ranks = np.zeros(len(query.candidate_ids), dtype=np.int32)
            ranks[order] = np.arange(1, len(order) + 1)
            accepted = self.feature_log.append(
                ServedRequest(
                    request_id=query.request_id,
                    served_at=now,
                    user_id=query.user_id,
                    target=target,
                    model_version=scored.version,
                    schema_hash=contract.schema_hash,
                    candidate_ids=query.candidate_ids,
                    features=assembled.matrix,
                    scores=scored.scores,
                    ranks=ranks,
                    degraded=response.degraded,
                )
            )
            if accepted:
                self.metrics.feature_log_rows.inc(len(query.candidate_ids))
        logger.info(
            "rank",
            user=user,
            target=target,
            version=version,
            candidates=len(query.candidate_ids),
            returned=len(order),
            unknown_user=response.unknown_user,
            degraded=response.degraded,
            ms={k: round(v * 1000, 2) for k, v in outcome.stages.items()},
        )

    @staticmethod
    def _response(
        query: RankQuery,
        contract: FeatureContract,
        served: ServedModel | None,
        assembled: Assembled,
        scored: Scored,
        order: np.ndarray,
        dropped: dict[int, str],
    ) -> pb.RankResponse:
        missing = assembled.missing
        user_cols = contract.columns_of(USER_ENTITY)
        cand_cols = contract.columns_of(query.kind.value)
        unknown_user = bool(user_cols.size and len(missing) and missing[0, user_cols].all())
        unknown = (
            np.asarray(missing[:, cand_cols].all(axis=1))
            if cand_cols.size
            else np.zeros(len(query.candidate_ids), dtype=bool)
        )
        groups = list(served.groups) if served is not None else []
        cand_type = TYPE_OF_KIND[query.kind]
        response = pb.RankResponse(
            model_name=query.target.name,
            model_version=scored.version,
            request_id=query.request_id,
            unknown_user=unknown_user,
            feature_service=contract.service,
            filtered=[
                pb.FilteredCandidate(id=query.candidate_ids[i], reason=why)
                for i, why in sorted(dropped.items())
            ],
        )
        # Built in place, from Python lists made in one numpy pass each: at 100 candidates
        # this is a third of building each message (and its reasons) on its own.
        ids = query.candidate_ids
        rows = order.tolist()
        scores = scored.scores[order].astype(np.float64).tolist()
        flags = unknown[order].tolist()
        # Reasons where the model explains itself; else none (empty groups per candidate).
        top, values = (
            top_reasons(scored.contributions[order])
            if scored.contributions is not None and groups and rows
            else ([[]] * len(rows), [[]] * len(rows))
        )
        add = response.candidates.add
        for position, (i, score, flag, picked, contributions) in enumerate(
            zip(rows, scores, flags, top, values, strict=True), start=1
        ):
            add_reason = add(
                id=ids[i], type=cand_type, score=score, rank=position, unknown=flag
            ).reasons.add
            for g, value in zip(picked, contributions, strict=True):
                add_reason(group=groups[g], contribution=value)
        return response
